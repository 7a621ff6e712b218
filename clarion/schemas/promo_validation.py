"""Validation of a POST /promo body into a Campaign, with one error per offending field."""

from __future__ import annotations

from typing import Any

from clarion.schemas.audiences import ExpressionError, audience_from_body
from clarion.schemas.channels import CHANNELS
from clarion.schemas.promo import Campaign, SendWindow
from clarion.schemas.validation import (
    HHMM_RE,
    VERSION_ERROR,
    ValidationFailed,
    _Checker,
    _shown,
    as_version,
    timestamp_of,
)

MAX_SCHEDULE_AHEAD_S = 366 * 24 * 3600.0
MAX_PACING_PER_S = 1_000_000.0


def validate_campaign(body: Any, client_id: str, now: float, trace_id: str = "") -> Campaign:
    """Check a POST /promo body from `client_id`; ValidationFailed (400) or ExpressionError (422) when it is not."""
    c = _Checker(body)
    campaign_id = c.ident("campaign_id")
    template_id = c.ident("template_id")
    version = c.body.get("template_version")
    if version is not None and (version := as_version(version)) is None:
        c.fail("template_version", VERSION_ERROR)
    channels = c.body.get("channels")
    if not isinstance(channels, list) or not channels:
        c.fail("channels", f"must be a non-empty list of {', '.join(CHANNELS)}, in order of preference")
        channels = []
    elif bad := [ch for ch in channels if ch not in CHANNELS]:
        c.fail("channels", f"unknown channel(s) {[_shown(ch) for ch in bad[:5]]}; expected {', '.join(CHANNELS)}")
    params = c.free_json("params", param_names=True)
    if "user" in params:
        c.fail("params", "'user' is reserved: templates get the user's id and attributes under it")
    send_at = _send_at(c, c.body.get("send_at"), now)
    window = _window(c, c.body.get("window"))
    pacing = c.body.get("pacing_per_s", 0)
    if isinstance(pacing, bool) or not isinstance(pacing, (int, float)) or not 0 <= pacing <= MAX_PACING_PER_S:
        c.fail("pacing_per_s", f"must be a number from 0 (no pacing) to {MAX_PACING_PER_S:g}")
        pacing = 0
    audience = None
    try:
        audience = audience_from_body(c.body.get("audience"))
    except ValidationFailed as exc:
        c.errors.extend(exc.errors)
    except ExpressionError:
        c.done()  # shape errors first (400); then the expression's own (422)
        raise
    c.done()
    assert audience is not None and campaign_id is not None and template_id is not None
    return Campaign(
        client_id=client_id, campaign_id=campaign_id, template_id=template_id, template_version=version,
        channels=list(dict.fromkeys(channels)), audience=audience, params=params, send_at=send_at,
        window=window, pacing_per_s=float(pacing), created_at=now, trace_id=trace_id,
    )  # fmt: skip


def _send_at(c: _Checker, value: Any, now: float) -> float:
    """Epoch seconds or RFC 3339 text; absent or past: now (a past time is not an error: clocks differ)."""
    if value is None or (value := timestamp_of(c, "send_at", value)) is None:
        return now
    if value > now + MAX_SCHEDULE_AHEAD_S:
        c.fail("send_at", "is more than a year ahead")
        return now
    return max(float(value), now)


def _window(c: _Checker, value: Any) -> SendWindow | None:
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) != {"start", "end"}:
        c.fail("window", 'must be {"start": "HH:MM", "end": "HH:MM"} in each user\'s local time')
        return None
    bad = [k for k in ("start", "end") if not isinstance(value[k], str) or not HHMM_RE.fullmatch(value[k])]
    for key in bad:
        c.fail(f"window.{key}", "must be HH:MM (24-hour)")
    return None if bad else SendWindow(start=value["start"], end=value["end"])
