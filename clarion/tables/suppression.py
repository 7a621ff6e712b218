"""Suppression: addresses a provider told us never to send to again, one table across channels.

An APNs 410 `Unregistered` or FCM `UNREGISTERED` push token is dead; a Twilio 21610
number has opted out (STOP). Sending again wastes a call at best and breaks the law at
worst. The table lives with the user (keyed client/user_id, co-partitioned with the users
table and the lanes), so the deliver stage that hears the answer records it and the
route stage reads it, both locally. A suppressed address is skipped when a notification
is routed (outcome `suppressed`); a profile upsert that adds the address anew (a new
device registering the token again, a user texting START and being re-added) clears it.
"""

from __future__ import annotations

from typing import Any

import msgspec

# (channel, a fragment of the provider's permanent-failure reason) that suppress the address
SUPPRESSING = (
    ("apns", "Unregistered"),
    ("fcm", "UNREGISTERED"),
    ("sms", "21610"),
)

Suppressions = dict[str, str]  # "channel|address" -> the reason


def entry(channel: str, address: str) -> str:
    return f"{channel}|{address}"


def suppresses(channel: str, reason: str) -> bool:
    """Whether a permanent failure on `channel` with `reason` means: never send to this address again."""
    return any(ch == channel and fragment in reason for ch, fragment in SUPPRESSING)


_decode = msgspec.json.Decoder(dict[str, str]).decode
_encode = msgspec.json.Encoder().encode


def decode(raw: bytes | None) -> Suppressions:
    return _decode(raw) if raw else {}


def encode(entries: Suppressions) -> bytes:
    return _encode(entries)


class SuppressionBook:
    """The suppression table as the stages use it: read and changed by explicit partition."""

    def __init__(self, writer: Any) -> None:
        self.writer = writer

    def of(self, partition: int, user_key: str) -> Suppressions:
        return decode(self.writer.get(partition, user_key.encode()))

    def add(self, partition: int, user_key: str, channel: str, address: str, reason: str) -> None:
        entries = self.of(partition, user_key)
        entries[entry(channel, address)] = reason
        self.writer.set(partition, user_key.encode(), encode(entries))

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
