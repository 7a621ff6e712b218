"""Notification status: outcomes folded into one document per notification_id.

The document is a msgspec Struct, encoded as JSON in the status table: every delivery
reads, folds and writes it twice (accepted, sent), so it is decoded and encoded with
msgspec and folded in place.
"""

from __future__ import annotations

from typing import Any

import msgspec

from clarion.schemas.records import Outcome
from clarion.schemas.status import DONE, FEEDBACK, MISSED, REACHED, TERMINAL, DeliveryState, StatusDoc


def rank(status: str) -> int:
    """In-flight states 0, the deliver stage's final ones 1, feedback 2: a lower rank never overwrites a higher."""
    return 2 if status in FEEDBACK else 1 if status in TERMINAL else 0


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(StatusDoc).decode


def encode_status(doc: StatusDoc) -> bytes:
    return _encode(doc)


def decode_status(raw: bytes) -> StatusDoc:
    return _decode(raw)


def fold(doc: StatusDoc | None, outcome: Outcome) -> StatusDoc:
    """Apply one outcome to a status document, in place (idempotent: a replay changes nothing)."""
    if doc is None:
        doc = StatusDoc(
            notification_id=outcome.notification_id,
            client_id=outcome.client_id,
            user_id=outcome.user_id,
            created_at=outcome.ts,
        )
    if outcome.status == "accepted":
        doc.planned = outcome.planned
    elif outcome.status == "duplicate":
        doc.duplicate_of = outcome.duplicate_of
        doc.planned = 0
    elif outcome.delivery_id is None:
        # A failure before any delivery was planned (no address on a channel, unknown template).
        doc.failures[outcome.channel or "*"] = outcome.reason
    else:
        prev = doc.deliveries.get(outcome.delivery_id)
        if prev is None or rank(outcome.status) >= rank(prev.status):
            doc.deliveries[outcome.delivery_id] = DeliveryState(
                channel=outcome.channel,
                status=outcome.status,
                attempts=max(outcome.attempt, prev.attempts if prev else 0),
                reason=outcome.reason,
                provider_message_id=outcome.provider_message_id or (prev.provider_message_id if prev else None),
            )
        else:  # feedback came first: keep it, and take the attempts the deliver stage counted
            prev.attempts = max(prev.attempts, outcome.attempt)
            prev.provider_message_id = prev.provider_message_id or outcome.provider_message_id
    doc.updated_at = max(doc.updated_at, outcome.ts)
    doc.status = overall(doc)
    return doc


def overall(doc: StatusDoc) -> str:
    """The notification's NotificationState (schemas/status.py), from its deliveries' states.

    `delivered`: every delivery was confirmed delivered by its provider (feedback).
    `partially_sent`: some deliveries reached their provider and some channel did not (a
    failed, dead_lettered, undelivered or bounced delivery, or a channel that could not be
    planned); the per-delivery and per-channel detail says which. A delivery that reached
    its provider and was reported undelivered or bounced later counts as missed.
    """
    if doc.duplicate_of:
        return "duplicate"
    states = [d.status for d in doc.deliveries.values()]
    if doc.planned is None or sum(s in DONE for s in states) < doc.planned:
        return "accepted"
    if any(s in REACHED for s in states):
        if doc.failures or any(s in MISSED for s in states):
            return "partially_sent"
        return "delivered" if all(s in ("delivered", "complained") for s in states) else "sent"
    if "dead_lettered" in states:
        return "dead_lettered"
    return "failed"


def attempts(doc: StatusDoc) -> int:
    """Provider attempts made across all deliveries."""
    return sum(d.attempts for d in doc.deliveries.values())


def public_status(doc: StatusDoc) -> dict[str, Any]:
    """The status document as the API shows it."""
    return {
        "notification_id": doc.notification_id,
        "user_id": doc.user_id,
        "status": doc.status,
        "attempts": attempts(doc),
        "duplicate_of": doc.duplicate_of,
        "deliveries": msgspec.to_builtins(doc.deliveries),
        "failures": doc.failures,
        "created_at": doc.created_at,
        "updated_at": doc.updated_at,
    }


class StatusBoard:
    """The status table as the stages write it: outcomes folded in place, written once per batch.

    Status lives on the partition of the user it is about (co-partitioned with requests
    and lanes), so the stage that produces an outcome folds it right there: no outcomes
    consumer, no extra faust event per outcome. Folding is synchronous, so actors of
    several agents sharing the board never interleave inside one fold.
    """

    def __init__(self, writer: Any) -> None:
        self.writer = writer
        self.dirty: dict[tuple[int, bytes], StatusDoc] = {}

    def fold(self, partition: int, outcome: Outcome) -> StatusDoc:
        where = (partition, outcome.notification_id.encode())
        doc = self.dirty.get(where)
        if doc is None:
            raw = self.writer.get(*where)
            doc = decode_status(raw) if raw is not None else None
        self.dirty[where] = doc = fold(doc, outcome)
        doc.partition = partition
        return doc

    def get(self, partition: int, notification_id: str) -> StatusDoc | None:
        """The notification's status as this worker holds it (folded but unflushed changes included)."""
        where = (partition, notification_id.encode())
        doc = self.dirty.get(where)
        if doc is None:
            raw = self.writer.get(*where)
            doc = decode_status(raw) if raw is not None else None
        return doc

    def prune(self, owned: set[int], now: float, retention_s: float) -> int:
        """Delete statuses of owned partitions not updated for `retention_s`; returns how many."""
        expired = []
        for key, raw in list(self.writer.table.data.items()):
            doc = decode_status(raw)
            if doc.partition in owned and now - doc.updated_at >= retention_s:
                expired.append((doc.partition, key))
        for partition, key in expired:
            self.dirty.pop((partition, key), None)
            self.writer.delete(partition, key)
        return len(expired)

    async def flush(self) -> None:
        dirty, self.dirty = self.dirty, {}
        for (partition, key), doc in dirty.items():
            self.writer.set(partition, key, encode_status(doc))
        await self.writer.flush()


def partition_of(notification_id: str) -> int | None:
    """The partition an API-made notification id names (`n<partition>_<hex>`), else None."""
    head, sep, rest = notification_id.partition("_")
    if not sep or len(head) < 2 or head[0] != "n" or not head[1:].isdigit() or not rest:
        return None
    return int(head[1:])


def new_notification_id(partition: int, random_hex: str) -> str:
    """An id that names the partition holding its status, so GET /notif/{id} can be routed."""
    return f"n{partition}_{random_hex}"
