"""Personal fields as the dashboard shows them: enough to recognise a record, not to use it.

An email keeps its first character and its domain (`a***@example.com`), a phone number
its last two digits (`***00`), a push token nothing but that it exists. A user's
attributes show their names only (their values may be anything the client stored).
"""

from __future__ import annotations

from typing import Any

from clarion.schemas.records import UserProfile

HIDDEN = "***"


def mask_email(address: str | None) -> str | None:
    """`alice@example.com` -> `a***@example.com`; something that is not an address -> `***`."""
    if address is None:
        return None
    local, at, domain = address.rpartition("@")
    if not at or not local:
        return HIDDEN
    return f"{local[0]}{HIDDEN}@{domain}"


def mask_phone(number: str | None) -> str | None:
    """`+14155550100` -> `***00`: the last two digits only."""
    if number is None:
        return None
    digits = [c for c in number if c.isdigit()]
    return HIDDEN + "".join(digits[-2:]) if len(digits) > 2 else HIDDEN


def mask_address(channel: str, address: str) -> str:
    """An address of `channel` masked: email and phone as above, a push token elided."""
    if channel == "email":
        return mask_email(address) or HIDDEN
    if channel == "sms":
        return mask_phone(address) or HIDDEN
    return f"{channel} token ({len(address)} chars)"


def masked_user(user: UserProfile) -> dict[str, Any]:
    """A user profile with its personal fields masked, for a read-only table view."""
    return {
        "user_id": user.user_id,
        "email": mask_email(user.email),
        "phone": mask_phone(user.phone),
        "apns_tokens": len(user.apns_tokens),
        "fcm_tokens": len(user.fcm_tokens),
        "locale": user.locale,
        "timezone": user.timezone,
        "tags": list(user.tags),
        "attributes": sorted(user.attributes),
        "promo_opt_out": user.promo_opt_out,
        "channel_opt_out": list(user.channel_opt_out),
        "quiet_hours": f"{user.quiet_hours.start}-{user.quiet_hours.end}" if user.quiet_hours else None,
    }


def masked_suppressions(user_id: str, entries: dict[str, str]) -> list[dict[str, Any]]:
    """One user's suppression entries (`channel|address` -> reason), addresses masked."""
    out = []
    for entry, reason in sorted(entries.items()):
        channel, _, address = entry.partition("|")
        out.append({"user_id": user_id, "channel": channel, "address": mask_address(channel, address),
                    "reason": reason})  # fmt: skip
    return out
