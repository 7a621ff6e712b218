"""User profiles: where each channel reaches a user."""

from __future__ import annotations

from clarion.schemas.channels import channel as channel_spec
from clarion.schemas.records import UserProfile


def addresses_for(user: UserProfile | None, channel: str) -> list[str]:
    """Every address of `user` on `channel` (one per device for push); [] when none."""
    spec = channel_spec(channel)
    if user is None:
        return []
    found = getattr(user, spec.address_field)
    if spec.devices:
        return list(found)
    return [found] if found else []
