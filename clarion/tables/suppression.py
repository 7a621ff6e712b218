"""Suppression: addresses a provider told us never to send to again, one table across channels.

An APNs 410 `Unregistered` or FCM `UNREGISTERED` push token is dead; a Twilio 21610
number has opted out (STOP). Feedback that arrives later (agents/feedback.py) suppresses
too: SES permanent bounces and complaints, Twilio callbacks with an SMS_GONE code. Sending
again wastes a call at best and breaks the law at worst. The table lives with the user
(keyed client/user_id, co-partitioned with the users table and the lanes), so the stage
that hears the answer (deliver, feedback) records it and the route stage reads it, both
locally. A suppressed address is skipped when a notification
is routed (outcome `suppressed`); a profile upsert that adds the address anew (a new
device registering the token again, a user texting START and being re-added) clears it.

A dead push token is also removed from the user's profile in the users table (same
partition, written through the one users writer the users agent folds upserts with, so
the changelog keeps the order of the local writes): the profile no longer lists it, and
routing finds the user's other devices only. An upsert that lists the token again adds
it anew, which clears its suppression (the app registered it again, or a client re-sent a
stale profile: then one more call finds it dead and removes it again).
"""

from __future__ import annotations

from typing import Any

import msgspec

from clarion.schemas.channels import PUSH_CHANNELS, REGISTRY
from clarion.schemas.codec import decode as decode_record
from clarion.schemas.codec import encode as encode_record
from clarion.schemas.records import UserProfile

# Twilio ErrorCodes in a status callback (undelivered/failed) that mean the number is gone for good:
# 21610 the recipient replied STOP; 30004 blocked (opted out, or the carrier blocks it for this
# recipient); 30005 unknown or inactive number; 30006 a landline or unreachable carrier. Not here
# (they pass): 30003 handset off or out of coverage, 30007 carrier filtering of the content,
# 30008 unknown error, 30034 unregistered sender.
SMS_GONE = frozenset({"21610", "30004", "30005", "30006"})


Suppressions = dict[str, str]  # "channel|address" -> the reason


def entry(channel: str, address: str) -> str:
    return f"{channel}|{address}"


def suppresses(channel: str, reason: str) -> bool:
    """Whether a permanent failure on `channel` with `reason` means: never send to this address again."""
    spec = REGISTRY.get(channel)  # its suppress_on: fragments of a permanent failure's reason
    return spec is not None and any(fragment in reason for fragment in spec.suppress_on)


def feedback_suppresses(channel: str, status: str, reason: str | None) -> bool:
    """Whether provider feedback means: never send to this address again.

    Email: a permanent bounce (`bounced`; transient bounces arrive as `undelivered`) or a
    complaint. SMS: `undelivered` with an SMS_GONE code (the reason starts with Twilio's ErrorCode).
    """
    if channel == "email":
        return status in ("bounced", "complained")
    if channel == "sms" and status == "undelivered":
        return (reason or "").split(" ", 1)[0] in SMS_GONE
    return False


_decode = msgspec.json.Decoder(dict[str, str]).decode
_encode = msgspec.json.Encoder().encode


def decode(raw: bytes | None) -> Suppressions:
    return _decode(raw) if raw else {}


def encode(entries: Suppressions) -> bytes:
    return _encode(entries)


class SuppressionBook:
    """The suppression table as the stages use it: read and changed by explicit partition.

    `users` is the users table's writer (the one the users agent folds upserts with):
    a dead push token leaves the profile too.
    """

    def __init__(self, writer: Any, users: Any = None) -> None:
        self.writer = writer
        self.users = users

    def of(self, partition: int, user_key: str) -> Suppressions:
        return decode(self.writer.get(partition, user_key.encode()))

    def add(self, partition: int, user_key: str, channel: str, address: str, reason: str) -> None:
        entries = self.of(partition, user_key)
        entries[entry(channel, address)] = reason
        self.writer.set(partition, user_key.encode(), encode(entries))
        if channel in PUSH_CHANNELS and self.users is not None:  # a dead device token leaves the profile
            self.drop_token(partition, user_key, channel, address)

    def drop_token(self, partition: int, user_key: str, channel: str, token: str) -> bool:
        """Remove a push token from the user's stored profile; whether it was there."""
        raw = self.users.get(partition, user_key.encode())
        if raw is None:
            return False
        user = decode_record(UserProfile, raw)
        field = REGISTRY[channel].address_field
        tokens: list[str] = getattr(user, field)
        if token not in tokens:
            return False
        kept = msgspec.structs.replace(user, **{field: [t for t in tokens if t != token]})
        self.users.set(partition, user_key.encode(), encode_record(kept))
        return True

    def clear(self, partition: int, user_key: str, addresses: set[tuple[str, str]]) -> int:
        """Forget these (channel, address) pairs; how many were suppressed."""
        entries = self.of(partition, user_key)
        cleared = [e for e in (entry(ch, a) for ch, a in addresses) if e in entries]
        if not cleared:
            return 0
        for e in cleared:
            del entries[e]
        if entries:
            self.writer.set(partition, user_key.encode(), encode(entries))
        else:
            self.writer.delete(partition, user_key.encode())
        return len(cleared)

    async def flush(self) -> None:
        await self.writer.flush()
        if self.users is not None:
            await self.users.flush()
