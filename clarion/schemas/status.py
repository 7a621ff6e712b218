"""One status vocabulary, snake_case everywhere: what an outcome says, what each delivery of a
notification is at, and what the notification as a whole is (GET /notif/{id})."""

from __future__ import annotations

from typing import Literal

import msgspec

# Outcomes on the `outcomes` topic (the stages emit these; the status folds them)
OutcomeStatus = Literal[
    "accepted", "duplicate", "suppressed", "retrying", "sent", "failed", "dead_lettered", "cancelled"
]
# What a provider reported later (topic: feedback). rejected: a campaign's execution refused for
# good at send time (a dead token), sent by the promo lane because suppression lives on the user's partition
FeedbackStatus = Literal["delivered", "undelivered", "bounced", "complained", "rejected"]
# A notification as a whole, from its deliveries' states (tables/status.py: overall)
NotificationState = Literal["accepted", "duplicate", "delivered", "sent", "partially_sent", "failed", "dead_lettered"]

TERMINAL = frozenset({"sent", "failed", "dead_lettered"})
# Final over TERMINAL, which a late or replayed outcome of the deliver stage never undoes
# (a callback can beat the "sent" outcome to the table).
FEEDBACK = frozenset({"delivered", "undelivered", "bounced", "complained"})
DONE = TERMINAL | FEEDBACK
REACHED = frozenset({"sent", "delivered", "complained"})  # the provider took it (complained: and it arrived)
MISSED = frozenset({"failed", "dead_lettered", "undelivered", "bounced"})


class DeliveryState(msgspec.Struct):
    channel: str | None
    status: str  # an OutcomeStatus, or a FeedbackStatus once the provider reported
    attempts: int
    reason: str | None = None
    provider_message_id: str | None = None


class StatusDoc(msgspec.Struct):
    """A notification's status document in the status table, keyed by notification_id."""

    notification_id: str
    client_id: str = ""
    user_id: str = ""
    status: str = "accepted"  # a NotificationState
    planned: int | None = None
    deliveries: dict[str, DeliveryState] = {}
    failures: dict[str, str | None] = {}
    duplicate_of: str | None = None
    created_at: float = 0.0
    updated_at: float = 0.0
    partition: int = -1  # where it lives: what its expiry's tombstone needs
