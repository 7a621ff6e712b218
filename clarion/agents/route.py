"""Route: turn an accepted request into delivery tasks, one per channel address."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from clarion.schemas.records import DeliveryTask, NotificationRequest, UserProfile
from clarion.tables.suppression import entry
from clarion.tables.templates import resolve
from clarion.tables.users import addresses_for


@dataclass
class Plan:
    tasks: list[DeliveryTask] = field(default_factory=list)
    # (channel or None for the whole request, reason) for what cannot be delivered.
    failures: list[tuple[str | None, str]] = field(default_factory=list)
    # (channel, reason) for addresses skipped because they are suppressed
    suppressed: list[tuple[str, str]] = field(default_factory=list)


def plan(
    request: NotificationRequest,
    user: UserProfile | None,
    templates: Mapping[str, Any],
    lane: str,
    now: float,
    suppressed: Mapping[str, str] | None = None,
) -> Plan:
    """Resolve template and addresses; each channel yields tasks or one failure; suppressed addresses are skipped."""
    out = Plan()
    if request.expires_at is not None and now >= request.expires_at:
        out.failures.append((None, "expired"))
        return out
    template = resolve(templates, request.client_id, request.template_id, request.template_version)
    if template is None:
        version = request.template_version or "latest"
        out.failures.append((None, f"unknown_template: {request.template_id}@{version}"))
        return out
    if user is None:
        out.failures.append((None, f"unknown_user: {request.user_id}"))
        return out
    has_content = template.channels()
    for channel in request.channels:
        if channel not in has_content:
            out.failures.append((channel, f"template_has_no_{channel}_content"))
            continue
        addresses = addresses_for(user, channel)
        if not addresses:
            dead = _suppressed_on(suppressed, channel)  # its push tokens died and left the profile
            if dead is not None:
                out.suppressed.append((channel, f"suppressed: {dead}"))
            else:
                out.failures.append((channel, f"no_address: user has no {channel} address"))
            continue
        for index, address in enumerate(addresses):
            if suppressed and (why := suppressed.get(entry(channel, address))) is not None:
                out.suppressed.append((channel, f"suppressed: {why}"))
                continue
            out.tasks.append(
                DeliveryTask(
                    delivery_id=f"{request.notification_id}.{channel}.{index}",
                    notification_id=request.notification_id,
                    client_id=request.client_id,
                    user_id=request.user_id,
                    channel=channel,
                    lane=lane,
                    address=address,
                    template_id=template.template_id,
                    template_version=template.version,
                    params=request.params,
                    locale=user.locale,
                    expires_at=request.expires_at,
                    trace_id=request.trace_id,
                    accepted_at=request.accepted_at,
                )
            )
    return out


def _suppressed_on(suppressed: Mapping[str, str] | None, channel: str) -> str | None:
    """Why the user's last suppressed address on `channel` was suppressed, if one was."""
    prefix = entry(channel, "")
    reasons = [why for key, why in (suppressed or {}).items() if key.startswith(prefix)]
    return reasons[-1] if reasons else None
