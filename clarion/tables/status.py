"""Notification status: outcomes folded into one document per notification_id."""

from __future__ import annotations

from typing import Any

from clarion.schemas.records import Outcome

TERMINAL = frozenset({"sent", "failed", "dead_lettered"})


def fold(status: dict[str, Any] | None, outcome: Outcome) -> dict[str, Any]:
    """Apply one outcome to a status document (idempotent: a replayed outcome changes nothing)."""
    doc = status or {
        "notification_id": outcome.notification_id,
        "client_id": outcome.client_id,
        "user_id": outcome.user_id,
        "planned": None,
        "deliveries": {},
        "failures": {},
        "duplicate_of": None,
        "created_at": outcome.ts,
    }
    doc = {**doc, "deliveries": dict(doc["deliveries"]), "failures": dict(doc["failures"])}
    if outcome.status == "accepted":
        doc["planned"] = outcome.planned
    elif outcome.status == "duplicate":
        doc["duplicate_of"] = outcome.duplicate_of
        doc["planned"] = 0
    elif outcome.delivery_id is None:
        # A failure before any delivery was planned (no address on a channel, unknown template).
        doc["failures"][outcome.channel or "*"] = outcome.reason
    else:
        prev = doc["deliveries"].get(outcome.delivery_id)
        if prev is None or prev["status"] not in TERMINAL or outcome.status in TERMINAL:
            doc["deliveries"][outcome.delivery_id] = {
                "channel": outcome.channel,
                "status": outcome.status,
                "attempts": max(outcome.attempt, prev["attempts"] if prev else 0),
                "reason": outcome.reason,
                "provider_message_id": outcome.provider_message_id,
            }
    doc["updated_at"] = outcome.ts
    doc["status"] = overall(doc)
    return doc


def overall(doc: dict[str, Any]) -> str:
    """accepted | duplicate | sent | failed | dead-lettered, from the delivery states."""
    if doc["duplicate_of"]:
        return "duplicate"
    planned = doc["planned"]
    states = [d["status"] for d in doc["deliveries"].values()]
    if planned is None or sum(s in TERMINAL for s in states) < planned:
        return "accepted"
    if "sent" in states:
        return "sent"
    if "dead_lettered" in states:
        return "dead-lettered"
    return "failed"


def attempts(doc: dict[str, Any]) -> int:
    """Provider attempts made across all deliveries."""
    return sum(d["attempts"] for d in doc["deliveries"].values())
