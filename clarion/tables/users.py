"""User profiles: where each channel reaches a user."""

from __future__ import annotations

from clarion.schemas.records import UserProfile


def addresses_for(user: UserProfile | None, channel: str) -> list[str]:
    """Every address of `user` on `channel` (one per device for push); [] when none."""
    if user is None:
        return []
    if channel == "email":
        return [user.email] if user.email else []
    if channel == "sms":
        return [user.phone] if user.phone else []
    if channel == "apns":
        return list(user.apns_tokens)
    if channel == "fcm":
        return list(user.fcm_tokens)
    raise ValueError(f"unknown channel {channel!r}")
