"""Notification status: outcomes folded into one document per notification_id.

The document is a msgspec Struct, encoded as JSON in the status table: every delivery
reads, folds and writes it twice (accepted, sent), so it is decoded and encoded with
msgspec and folded in place.
"""

from __future__ import annotations

from typing import Any

import msgspec

from clarion.schemas.records import Outcome

TERMINAL = frozenset({"sent", "failed", "dead_lettered"})


class DeliveryState(msgspec.Struct):
    channel: str | None
    status: str
    attempts: int
    reason: str | None = None
    provider_message_id: str | None = None


class StatusDoc(msgspec.Struct):
    notification_id: str
    client_id: str = ""
    user_id: str = ""
    status: str = "accepted"
    planned: int | None = None
    deliveries: dict[str, DeliveryState] = {}
    failures: dict[str, str | None] = {}
    duplicate_of: str | None = None
    created_at: float = 0.0
    updated_at: float = 0.0


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
        if prev is None or prev.status not in TERMINAL or outcome.status in TERMINAL:
            doc.deliveries[outcome.delivery_id] = DeliveryState(
                channel=outcome.channel,
                status=outcome.status,
                attempts=max(outcome.attempt, prev.attempts if prev else 0),
                reason=outcome.reason,
                provider_message_id=outcome.provider_message_id,
            )
    doc.updated_at = max(doc.updated_at, outcome.ts)
    doc.status = overall(doc)
    return doc


def overall(doc: StatusDoc) -> str:
    """accepted | duplicate | sent | failed | dead-lettered, from the delivery states."""
    if doc.duplicate_of:
        return "duplicate"
    states = [d.status for d in doc.deliveries.values()]
    if doc.planned is None or sum(s in TERMINAL for s in states) < doc.planned:
        return "accepted"
    if "sent" in states:
        return "sent"
    if "dead_lettered" in states:
        return "dead-lettered"
    return "failed"


def attempts(doc: StatusDoc) -> int:
    """Provider attempts made across all deliveries."""
    return sum(d.attempts for d in doc.deliveries.values())


def public_status(doc: StatusDoc) -> dict[str, Any]:
    """The status document as the API shows it."""
    return {
        "notification_id": doc.notification_id,
        "status": doc.status,
        "attempts": attempts(doc),
        "duplicate_of": doc.duplicate_of,
        "deliveries": msgspec.to_builtins(doc.deliveries),
        "failures": doc.failures,
        "created_at": doc.created_at,
        "updated_at": doc.updated_at,
    }
