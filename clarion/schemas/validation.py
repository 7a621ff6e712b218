"""Validation of API bodies into records, with one error per offending field."""

from __future__ import annotations

import re
import time
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from clarion.schemas.records import CHANNELS, TemplateVersion, UserProfile

ID_RE = re.compile(r"^[A-Za-z0-9._:@\-]{1,128}$")
EMAIL_RE = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]{2,}$")
E164_RE = re.compile(r"^\+[1-9][0-9]{6,14}$")
APNS_TOKEN_RE = re.compile(r"^[0-9a-fA-F]{64,200}$")
FCM_TOKEN_RE = re.compile(r"^[A-Za-z0-9_:\-]{20,4096}$")
LOCALE_RE = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$")
TEMPLATE_PARTS = ("email_subject", "email_text", "email_html", "push_title", "push_body", "sms_body")


class ValidationFailed(ValueError):
    """Raised with the list of {field, error} problems found in a request body."""

    def __init__(self, errors: list[dict[str, str]]) -> None:
        super().__init__("; ".join(f"{e['field']}: {e['error']}" for e in errors))
        self.errors = errors


class _Checker:
    def __init__(self, body: Any) -> None:
        if not isinstance(body, dict):
            raise ValidationFailed([{"field": "body", "error": "must be a JSON object"}])
        self.errors: list[dict[str, str]] = []
        self.body: dict[str, Any] = body

    def fail(self, field: str, error: str) -> None:
        self.errors.append({"field": field, "error": error})

    def ident(self, field: str, required: bool = True) -> str | None:
        value = self.body.get(field)
        if value is None:
            if required:
                self.fail(field, "is required")
            return None
        if not isinstance(value, str) or not ID_RE.match(value):
            self.fail(field, "must be 1-128 characters of letters, digits or ._:@-")
            return None
        return value

    def done(self) -> None:
        if self.errors:
            raise ValidationFailed(self.errors)


def validate_notification(body: Any, now: float | None = None) -> dict[str, Any]:
    """Check a POST /notif body; return the fields of a NotificationRequest."""
    c = _Checker(body)
    out: dict[str, Any] = {
        "client_id": c.ident("client_id"),
        "idempotency_key": c.ident("idempotency_key"),
        "user_id": c.ident("user_id"),
        "template_id": c.ident("template_id"),
    }
    channels = c.body.get("channels", c.body.get("channel"))
    if isinstance(channels, str):
        channels = [channels]
    if not isinstance(channels, list) or not channels:
        c.fail("channels", f"must be a non-empty list of {', '.join(CHANNELS)}")
    elif bad := [ch for ch in channels if ch not in CHANNELS]:
        c.fail("channels", f"unknown channel(s) {bad}; expected {', '.join(CHANNELS)}")
    else:
        out["channels"] = list(dict.fromkeys(channels))
    version = c.body.get("template_version")
    if version is not None and (not isinstance(version, int) or isinstance(version, bool) or version < 1):
        c.fail("template_version", "must be a positive integer")
    out["template_version"] = version
    params = c.body.get("params", {})
    if not isinstance(params, dict):
        c.fail("params", "must be a JSON object")
    out["params"] = params
    out["expires_at"] = _expiry(c, c.body.get("expires_at"), time.time() if now is None else now)
    c.done()
    return out


def _expiry(c: _Checker, value: Any, now: float) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        c.fail("expires_at", "must be an ISO-8601 timestamp or epoch seconds")
        return None
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            c.fail("expires_at", "must be an ISO-8601 timestamp or epoch seconds")
            return None
        if parsed.tzinfo is None:
            c.fail("expires_at", "must carry a timezone (e.g. 2026-01-01T00:00:00Z)")
            return None
        value = parsed.timestamp()
    if value <= now:
        c.fail("expires_at", "is already in the past")
        return None
    return float(value)


def validate_user(body: Any) -> UserProfile:
    """Check a POST /users body into a UserProfile."""
    c = _Checker(body)
    user_id = c.ident("user_id")
    email = c.body.get("email")
    if email is not None and (not isinstance(email, str) or not EMAIL_RE.match(email)):
        c.fail("email", "must be an email address")
    phone = c.body.get("phone")
    if phone is not None and (not isinstance(phone, str) or not E164_RE.match(phone)):
        c.fail("phone", "must be an E.164 number such as +14155550100")
    tokens = {}
    for field, pattern in (("apns_tokens", APNS_TOKEN_RE), ("fcm_tokens", FCM_TOKEN_RE)):
        value = c.body.get(field, [])
        if not isinstance(value, list) or not all(isinstance(t, str) and pattern.match(t) for t in value):
            c.fail(field, "must be a list of device tokens" + (" (hex)" if field == "apns_tokens" else ""))
            value = []
        tokens[field] = list(dict.fromkeys(value))
    locale = c.body.get("locale", "en")
    if not isinstance(locale, str) or not LOCALE_RE.match(locale):
        c.fail("locale", "must be a BCP 47 tag such as en or pt-BR")
    tz = c.body.get("timezone", "UTC")
    try:
        ZoneInfo(tz) if isinstance(tz, str) else None
        if not isinstance(tz, str):
            raise ZoneInfoNotFoundError(tz)
    except (ZoneInfoNotFoundError, ValueError):
        c.fail("timezone", "must be an IANA zone such as Europe/Paris")
    attributes = c.body.get("attributes", {})
    if not isinstance(attributes, dict):
        c.fail("attributes", "must be a JSON object")
    c.done()
    return UserProfile(
        user_id=user_id,
        email=email,
        phone=phone,
        locale=locale,
        timezone=tz,
        attributes=attributes,
        **tokens,
    )


def validate_template(body: Any) -> TemplateVersion:
    """Check a POST /template body's shape (Jinja2 syntax is checked by the renderer)."""
    c = _Checker(body)
    template_id = c.ident("template_id")
    version = c.body.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        c.fail("version", "must be a positive integer")
    parts: dict[str, str | None] = {}
    for name in TEMPLATE_PARTS:
        value = c.body.get(name)
        if value is not None and not isinstance(value, str):
            c.fail(name, "must be a string")
            value = None
        parts[name] = value
    if not any(parts.values()):
        c.fail("body", f"needs at least one of {', '.join(TEMPLATE_PARTS)}")
    if parts["email_subject"] and not (parts["email_text"] or parts["email_html"]):
        c.fail("email_text", "email needs email_text or email_html besides email_subject")
    if (parts["email_text"] or parts["email_html"]) and not parts["email_subject"]:
        c.fail("email_subject", "is required when an email body is given")
    c.done()
    return TemplateVersion(template_id=template_id, version=version, **parts)
