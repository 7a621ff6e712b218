"""Validation of API bodies into records, with one error per offending field."""

from __future__ import annotations

import re
import time
from datetime import datetime, timedelta, timezone
from functools import cache
from typing import Any
from zoneinfo import available_timezones

import msgspec

from clarion.schemas.channels import CHANNELS
from clarion.schemas.records import QuietHours, TemplateVersion, UserProfile

ID_RE = re.compile(r"^[A-Za-z0-9._:@\-]{1,128}$")
# Whitespace spelled out: Python's, JavaScript's and Rust's \s differ, and the OpenAPI schema carries this pattern.
_NOT_AT_OR_SPACE = r"[^@\t-\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff]"
EMAIL_RE = re.compile(rf"^{_NOT_AT_OR_SPACE}{{1,64}}@{_NOT_AT_OR_SPACE}+\.{_NOT_AT_OR_SPACE}{{2,}}$")
E164_RE = re.compile(r"^\+[1-9][0-9]{6,14}$")
APNS_TOKEN_RE = re.compile(r"^[0-9a-fA-F]{64,200}$")
FCM_TOKEN_RE = re.compile(r"^[A-Za-z0-9_:\-]{20,4096}$")
LOCALE_RE = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$")
SOURCE_MAX = 16 * 1024  # characters of template source per part
VERSION_MAX = 10**6
TEMPLATE_PARTS = ("email_subject", "email_text", "email_html", "push_title", "push_body", "sms_body")
PARAM_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")  # a name a template can write as {{ name }}
ID_ERROR = "must be 1-128 characters of letters, digits or ._:@-"
INT64_MAX = 2**63 - 1
VERSION_ERROR = "must be a positive integer"
TAG_RE = re.compile(r"^[A-Za-z0-9._:@/+\-]{1,64}$")
MAX_TAGS = 100
HHMM_RE = re.compile(r"^([01][0-9]|2[0-3]):[0-5][0-9]$")
# RFC 3339's date-time (JSON Schema's "date-time" format): what expires_at and send_at accept as text.
_DATE_TIME = r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]+)?"
RFC3339_RE = re.compile(_DATE_TIME + r"(?:[Zz]|([+-])([0-9]{2}):([0-9]{2}))")
NAIVE_TIMESTAMP_RE = re.compile(_DATE_TIME)
TIMESTAMP_ERROR = "must be an RFC 3339 timestamp (e.g. 2026-01-01T00:00:00Z) or epoch seconds"

# Limits on the free-form JSON of params and attributes: they travel in every record of a
# notification and reach Jinja2, so their shape is bounded before anything else reads them.
MAX_DEPTH = 8  # levels of nested objects and lists, the top object included
MAX_ENTRIES = 100  # keys of one object, or items of one list
MAX_KEY_CHARS = 128
MAX_ENCODED_BYTES = 16 * 1024


def is_id(value: object) -> bool:
    """A well-formed id (client, user, template, notification); never "." or "..", so it is safe in a URL path."""
    return isinstance(value, str) and ID_RE.fullmatch(value) is not None and value.strip(".") != ""


def as_version(value: object) -> int | None:
    """A template version: a positive integer within 64 bits (as records and the OpenAPI schema hold it), 1.0
    included (JSON Schema's integer: orjson reads `1.0` as a float); None when `value` is not one."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return value if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= INT64_MAX else None


@cache
def _zones() -> frozenset[str]:
    return frozenset(available_timezones())


def is_timezone(value: object) -> bool:
    """An IANA zone name this machine knows (looked up in the set, never opened as a file)."""
    return isinstance(value, str) and value in _zones()


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
        if not isinstance(value, str) or not ID_RE.fullmatch(value):  # match() would let a trailing \n through
            self.fail(field, ID_ERROR)
            return None
        return value

    def free_json(self, field: str, param_names: bool = False) -> dict[str, Any]:
        """An optional JSON object within the depth, size and key limits; {} (and a failure) when not an object."""
        value = self.body.get(field, {})
        if not isinstance(value, dict):
            self.fail(field, "must be a JSON object")
            return {}
        if problem := (param_names and _bad_param_name(value)) or _shape_problem(value, 0):
            self.fail(field, problem)
        elif len(msgspec.json.encode(value)) > MAX_ENCODED_BYTES:
            self.fail(field, f"is over {MAX_ENCODED_BYTES} bytes as JSON")
        return value

    def done(self) -> None:
        if self.errors:
            raise ValidationFailed(self.errors)


def validate_notification(body: Any, client_id: str, now: float | None = None) -> dict[str, Any]:
    """Check a POST /notif body from `client_id` (the API key's); return the fields of a NotificationRequest."""
    c = _Checker(body)
    out: dict[str, Any] = {
        "client_id": client_id,
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
        c.fail("channels", f"unknown channel(s) {[_shown(ch) for ch in bad[:5]]}; expected {', '.join(CHANNELS)}")
    else:
        out["channels"] = list(dict.fromkeys(channels))
    version = c.body.get("template_version")
    if version is not None and (version := as_version(version)) is None:
        c.fail("template_version", VERSION_ERROR)
    out["template_version"] = version
    out["params"] = c.free_json("params", param_names=True)
    out["expires_at"] = _expiry(c, c.body.get("expires_at"), time.time() if now is None else now)
    c.done()
    return out


def _bad_param_name(params: dict[str, Any]) -> str | None:
    """Params become template variables: each name must be one Jinja2 can write as {{ name }}."""
    for name in params:
        if not isinstance(name, str) or not PARAM_NAME_RE.fullmatch(name):
            return f"name {_shown(name)!r} must be a letter or _ then up to 63 letters, digits or _"
    return None


def _shape_problem(value: Any, depth: int) -> str | None:
    """What breaks the limits on nested JSON in `value`, or None."""
    if not isinstance(value, (dict, list)):
        return None
    if depth >= MAX_DEPTH:
        return f"is nested deeper than {MAX_DEPTH} levels"
    if len(value) > MAX_ENTRIES:
        return f"has an object or list of more than {MAX_ENTRIES} entries"
    if isinstance(value, dict):
        if long := next((k for k in value if len(k) > MAX_KEY_CHARS), None):
            return f"key {_shown(long)!r} is over {MAX_KEY_CHARS} characters"
        value = value.values()
    return next((p for item in value if (p := _shape_problem(item, depth + 1))), None)


def _shown(value: Any) -> Any:
    """A value as an error message may echo it: strings cut short, scalars as they are, nothing nested (its repr
    can blow the stack)."""
    if isinstance(value, str):
        return value if len(value) <= 40 else value[:40] + "..."
    return value if value is None or isinstance(value, (bool, int, float)) else f"<{type(value).__name__}>"


def timestamp_of(c: _Checker, field: str, value: Any) -> float | None:
    """Epoch seconds from RFC 3339 text or a number; None, with the failure noted, for anything else."""
    if isinstance(value, str):
        try:
            return parse_timestamp(value)
        except ValueError as exc:
            c.fail(field, str(exc))
            return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        c.fail(field, TIMESTAMP_ERROR)
        return None
    return float(value)


def _expiry(c: _Checker, value: Any, now: float) -> float | None:
    if value is None or (value := timestamp_of(c, "expires_at", value)) is None:
        return None
    if value <= now:
        c.fail("expires_at", "is already in the past")
        return None
    return float(value)


def parse_timestamp(text: str) -> float:
    """Epoch seconds of an RFC 3339 date-time, exactly what JSON Schema's "date-time" admits: a leap second
    (:60, only at 23:59 UTC) is the second after :59, and year 0000 is read too. ValueError says what is wrong."""
    match = RFC3339_RE.fullmatch(text)
    if match is None:
        naive = NAIVE_TIMESTAMP_RE.fullmatch(text)
        raise ValueError("must carry a timezone (e.g. 2026-01-01T00:00:00Z)" if naive else TIMESTAMP_ERROR)
    year, month, day, hour, minute, second = (int(g) for g in match.group(1, 2, 3, 4, 5, 6))
    sign, off_h, off_m = match.group(8), int(match.group(9) or 0), int(match.group(10) or 0)
    if off_h > 23 or off_m > 59:
        raise ValueError(TIMESTAMP_ERROR)
    offset = (-1 if sign == "-" else 1) * (off_h * 60 + off_m)
    leap = second == 60
    if leap and (hour * 60 + minute - offset) % 1440 != 23 * 60 + 59:
        raise ValueError(f"{TIMESTAMP_ERROR}: a leap second is 23:59:60 UTC")
    shift = 0.0
    if year == 0:  # 0000 is a leap year like 0004, 1461 days earlier; Python's datetime starts at year 1
        year, shift = 4, -1461 * 86400.0
    try:
        moment = datetime(year, month, day, hour, minute, 59 if leap else second,
                          tzinfo=timezone(timedelta(minutes=offset)))  # fmt: skip
    except ValueError as exc:  # 2030-02-30, 24:00:00
        raise ValueError(f"{TIMESTAMP_ERROR}: {exc}") from None
    return moment.timestamp() + shift + leap + float("0" + (match.group(7) or ""))


def validate_user(body: Any, client_id: str) -> UserProfile:
    """Check a POST /users body from `client_id` (the API key's) into a UserProfile."""
    c = _Checker(body)
    user_id = c.ident("user_id")
    email = c.body.get("email")
    if email is not None and (not isinstance(email, str) or not EMAIL_RE.fullmatch(email)):
        c.fail("email", "must be an email address")
    phone = c.body.get("phone")
    if phone is not None and (not isinstance(phone, str) or not E164_RE.fullmatch(phone)):
        c.fail("phone", "must be an E.164 number such as +14155550100")
    tokens = {}
    for field, pattern in (("apns_tokens", APNS_TOKEN_RE), ("fcm_tokens", FCM_TOKEN_RE)):
        value = c.body.get(field, [])
        if not isinstance(value, list) or not all(isinstance(t, str) and pattern.fullmatch(t) for t in value):
            c.fail(field, "must be a list of device tokens" + (" (hex)" if field == "apns_tokens" else ""))
            value = []
        tokens[field] = list(dict.fromkeys(value))
    locale = c.body.get("locale", "en")
    if not isinstance(locale, str) or not LOCALE_RE.fullmatch(locale):
        c.fail("locale", "must be a BCP 47 tag such as en or pt-BR")
    tz = c.body.get("timezone", "UTC")
    if not is_timezone(tz):
        c.fail("timezone", "must be an IANA zone such as Europe/Paris")
    attributes = c.free_json("attributes")
    tags = _tags(c, c.body.get("tags", []))
    promo_opt_out = c.body.get("promo_opt_out", False)
    if not isinstance(promo_opt_out, bool):
        c.fail("promo_opt_out", "must be true or false")
    channel_opt_out = _channel_opt_out(c, c.body.get("channel_opt_out", []))
    quiet_hours = _quiet_hours(c, c.body.get("quiet_hours"))
    c.done()
    return UserProfile(
        client_id=client_id,
        user_id=user_id,
        email=email,
        phone=phone,
        locale=locale,
        timezone=tz,
        attributes=attributes,
        tags=tags,
        promo_opt_out=promo_opt_out,
        channel_opt_out=channel_opt_out,
        quiet_hours=quiet_hours,
        **tokens,
    )


def _channel_opt_out(c: _Checker, value: Any) -> list[str]:
    """Channels the user wants no promotional messages on: known channels, duplicates dropped."""
    expected = ", ".join(CHANNELS)
    if not isinstance(value, list):
        c.fail("channel_opt_out", f"must be a list of channels ({expected})")
        return []
    if bad := [ch for ch in value if ch not in CHANNELS]:
        c.fail("channel_opt_out", f"unknown channel(s) {[_shown(ch) for ch in bad[:5]]}; expected {expected}")
        return []
    return list(dict.fromkeys(value))


def _tags(c: _Checker, value: Any) -> list[str]:
    """At most MAX_TAGS tags of 1-64 letters, digits or ._:@/+-; duplicates dropped, order kept."""
    if not isinstance(value, list):
        c.fail("tags", "must be a list of strings")
        return []
    if len(value) > MAX_TAGS:
        c.fail("tags", f"has {len(value)} tags; at most {MAX_TAGS}")
        return []
    if bad := [t for t in value if not isinstance(t, str) or not TAG_RE.fullmatch(t)]:  # "" is a bad tag too
        c.fail("tags", f"tag {_shown(bad[0])!r} must be 1-64 characters of letters, digits or ._:@/+-")
        return []
    return list(dict.fromkeys(value))


def _quiet_hours(c: _Checker, value: Any) -> QuietHours | None:
    """null, or {"start": "HH:MM", "end": "HH:MM"} in 24-hour local time, start and end different."""
    if value is None:
        return None
    if not isinstance(value, dict):
        c.fail("quiet_hours", 'must be an object such as {"start": "22:00", "end": "08:00"}, or null')
        return None
    before = len(c.errors)
    start, end = value.get("start"), value.get("end")
    for name, time_of_day in (("start", start), ("end", end)):
        if not isinstance(time_of_day, str) or not HHMM_RE.fullmatch(time_of_day):
            c.fail(f"quiet_hours.{name}", "must be a 24-hour time HH:MM such as 22:00")
    if unknown := sorted(k for k in value if k not in ("start", "end"))[:5]:
        c.fail("quiet_hours", f"unknown field(s) {[_shown(k) for k in unknown]}; expected start and end")
    if len(c.errors) > before:
        return None
    if start == end:
        c.fail("quiet_hours.end", "must differ from start (an empty window)")
        return None
    return QuietHours(start=start, end=end)


def validate_template(body: Any, client_id: str) -> TemplateVersion:
    """Check a POST /template body's shape from `client_id` (Jinja2 syntax is checked by the renderer)."""
    c = _Checker(body)
    template_id = c.ident("template_id")
    version = as_version(c.body.get("version"))
    if version is None:
        c.fail("version", VERSION_ERROR)
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
    override = c.body.get("critical_override", False)
    if not isinstance(override, bool):
        c.fail("critical_override", "must be true or false")
    c.done()
    return TemplateVersion(client_id=client_id, template_id=template_id, version=version,
                           critical_override=override is True, **parts)  # fmt: skip
