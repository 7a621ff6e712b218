"""Feedback: what providers report after accepting a delivery, folded into status and suppression.

The API's webhooks (web/webhooks.py) turn Twilio status callbacks and SES events (via
SNS) into Feedback records on the partition the notification id names, which is where
the notification's status, its user and the user's suppressions live: the fold, the
suppression and the outcome are all local. A campaign's execution has no status entry
(its id names its user's partition all the same): its provider metadata carried the
client, campaign and user back, so its feedback is a promo-lane outcome and, when the
address is gone, a suppression for that user. Feedback for a notification this partition
does not know (a status past its retention, an id clarion did not make) is counted and
dropped: there is nothing to fold it into and no user to suppress for.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import faust

from clarion.agents.guard import Part, guarded
from clarion.logs import event
from clarion.schemas.channels import channel, same_address
from clarion.schemas.codec import decode
from clarion.schemas.records import Feedback, UserProfile, scoped
from clarion.tables.changelog import ChangelogWriter
from clarion.tables.suppression import feedback_suppresses, suppresses
from clarion.tables.users import addresses_for
from clarion.topology.outbox import Outbox

if TYPE_CHECKING:
    from clarion.topology.topology import Topology

log = logging.getLogger("clarion.feedback")
SOURCE = "feedback"


@dataclass(frozen=True)
class _Source:
    """What Emitters.outcome needs to know about the notification a feedback item is about."""

    notification_id: str
    client_id: str
    user_id: str
    trace_id: str = ""
    campaign: str = ""  # a campaign's execution: its outcome is promo's, with no status entry to fold into


def register(topo: Topology) -> None:
    users = topo.emit.writer(topo.declared.users)

    async def handle(parts: Sequence[Part[Feedback]], out: Outbox) -> None:
        for part in parts:
            for item in part.items:
                fold_feedback(topo, users, part.partition, item, out)

    @topo.declared.app.agent(topo.declared.topics[SOURCE], name="clarion.feedback")
    async def feedback(stream: faust.StreamT) -> None:
        """Fold what providers reported later into the status; suppress addresses that are gone."""
        await guarded(topo, SOURCE, stream, Feedback, handle)


def fold_feedback(topo: Topology, users: ChangelogWriter, partition: int, item: Feedback, out: Outbox) -> None:
    """One feedback item: an outcome folded into its status, and a suppression when the address is gone."""
    if item.status == "rejected":  # from a promo lane: the outcome went out there, the suppression is ours
        if item.client_id and item.user_id and suppresses(item.channel, item.reason or ""):
            user_key = scoped(item.client_id, item.user_id)
            topo.resources.suppressions.add(partition, user_key, item.channel, item.address, item.reason or "rejected")
        return
    source = _source(topo, partition, item)
    if source is None or not item.delivery_id.startswith(f"{item.notification_id}.{item.channel}."):
        topo.emit.counters[("feedback", item.channel, "unknown")] += 1
        event(log, "feedback for an unknown notification or delivery dropped", logging.WARNING,
              notification_id=item.notification_id, delivery_id=item.delivery_id, partition=partition)  # fmt: skip
        return
    topo.emit.outcome(out, partition, item.status, source, channel=item.channel, delivery_id=item.delivery_id,
                 reason=item.reason, provider_message_id=item.provider_message_id)  # fmt: skip
    if feedback_suppresses(item.channel, item.status, item.reason):
        address = _address(users, partition, source, item)
        if address:
            reason = f"{item.status}: {item.reason}" if item.reason else item.status
            user_key = scoped(source.client_id, source.user_id)
            topo.resources.suppressions.add(partition, user_key, item.channel, address, reason)
            event(log, "address suppressed after feedback", notification_id=item.notification_id,
                  channel=item.channel, reason=reason)  # fmt: skip


def _source(topo: Topology, partition: int, item: Feedback) -> _Source | None:
    """Whose message the feedback is about: its status entry's client and user, or for a campaign's
    execution (no status entry) those its provider metadata carried back; None when neither."""
    doc = topo.resources.statuses.get(partition, item.notification_id)
    if doc is not None:
        return _Source(item.notification_id, doc.client_id, doc.user_id)
    if item.campaign and item.client_id and item.user_id:
        return _Source(item.notification_id, item.client_id, item.user_id, campaign=item.campaign)
    return None


def _address(users: ChangelogWriter, partition: int, source: _Source, item: Feedback) -> str:
    """The address to suppress: the user's own spelling of the one the provider names.

    Providers may change an email address's case; routing compares the profile's spelling.
    An address no longer on the profile is suppressed as the provider spelled it.
    """
    raw = users.get(partition, scoped(source.client_id, source.user_id).encode())
    held = addresses_for(decode(UserProfile, raw), item.channel) if raw else []
    spec = channel(item.channel)
    for address in held:
        if same_address(spec, address, item.address):
            return address
    return item.address
