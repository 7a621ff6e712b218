"""What the dashboard keeps of the outcomes and dlq topics: bounded, per client.

`OutcomeBook` keeps each client's last `ring` outcomes, counts per (lane, channel,
status) since the API started reading, and accepted->sent latencies per lane and
channel (the `accepted` outcome's time to the `sent` one's, both stamped by the workers).
`DeadLetterBook` keeps each client's last `ring` dead letters. At most `max_clients`
clients are kept, the least recently heard of dropped first; nothing is kept for a record
whose client cannot be told.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import orjson

from clarion.schemas.codec import PoisonMessage, decode, decode_batch
from clarion.schemas.records import DeadLetter, Outcome

T = TypeVar("T")
LATENCIES = 500  # per lane and channel
PENDING = 5000  # accepted notifications per client waiting for their `sent`


class PerClient(Generic[T]):
    """client_id -> T, at most `limit` clients, the least recently used dropped first."""

    def __init__(self, factory: Callable[[], T], limit: int) -> None:
        self.factory, self.limit = factory, limit
        self.items: OrderedDict[str, T] = OrderedDict()

    def of(self, client_id: str) -> T:
        item = self.items.get(client_id)
        if item is None:
            item = self.items[client_id] = self.factory()
            while len(self.items) > self.limit:
                self.items.popitem(last=False)
        self.items.move_to_end(client_id)
        return item

    def get(self, client_id: str) -> T | None:
        return self.items.get(client_id)


@dataclass
class ClientOutcomes:
    recent: deque[Outcome]
    counts: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    accepted_at: OrderedDict[str, float] = field(default_factory=OrderedDict)
    latencies: dict[tuple[str, str], deque[float]] = field(default_factory=dict)
    since: float = 0.0  # the earliest outcome counted


class OutcomeBook:
    def __init__(self, ring: int = 500, max_clients: int = 256) -> None:
        self.clients: PerClient[ClientOutcomes] = PerClient(lambda: ClientOutcomes(deque(maxlen=ring)), max_clients)

    def fold(self, partition: int, offset: int, key: bytes | None, value: bytes | None) -> None:
        """One record of the outcomes topic (one outcome or an array of them)."""
        for outcome in decode_batch(Outcome, value)[0]:
            self.add(outcome)

    def add(self, o: Outcome) -> None:
        if not o.client_id:
            return
        book = self.clients.of(o.client_id)
        book.recent.append(o)
        channel = o.channel or "-"
        book.counts[(o.lane, channel, o.status)] += 1
        book.since = min(book.since or o.ts, o.ts)
        if o.status == "accepted":
            book.accepted_at[o.notification_id] = o.ts
            while len(book.accepted_at) > PENDING:
                book.accepted_at.popitem(last=False)
        elif o.status == "sent" and o.notification_id in book.accepted_at:
            lane = book.latencies.setdefault((o.lane, channel), deque(maxlen=LATENCIES))
            lane.append(max(0.0, o.ts - book.accepted_at[o.notification_id]))

    def recent(self, client_id: str, limit: int = 100, **filters: str) -> list[dict[str, Any]]:
        """The client's latest outcomes, newest first; filters: status, channel, lane (exact), notification_id
        (a prefix)."""
        book = self.clients.get(client_id)
        if book is None:
            return []
        out = []
        prefix = filters.get("notification_id") or ""
        for o in reversed(book.recent):
            if any(filters.get(name) and getattr(o, name) != filters[name] for name in ("status", "channel", "lane")):
                continue
            if prefix and not o.notification_id.startswith(prefix):
                continue
            out.append(outcome_row(o))
            if len(out) >= limit:
                break
        return out

    def lanes(self, client_id: str) -> dict[str, Any]:
        """Counts per lane, channel and status, and latencies per lane and channel."""
        book = self.clients.get(client_id)
        if book is None:
            return {"since": None, "now": time.time(), "counts": [], "latency": []}
        counts = [{"lane": lane, "channel": ch, "status": st, "n": n}
                  for (lane, ch, st), n in sorted(book.counts.items())]  # fmt: skip
        latency = []
        for (lane, channel), values in sorted(book.latencies.items()):
            ordered = sorted(values)
            latency.append({"lane": lane, "channel": channel, "n": len(ordered),
                            "p50_ms": round(statistics.median(ordered) * 1000, 1),
                            "p95_ms": round(ordered[int(0.95 * (len(ordered) - 1))] * 1000, 1),
                            "max_ms": round(ordered[-1] * 1000, 1)})  # fmt: skip
        return {"since": book.since or None, "now": time.time(), "counts": counts, "latency": latency}


def outcome_row(o: Outcome) -> dict[str, Any]:
    return {"notification_id": o.notification_id, "status": o.status, "lane": o.lane, "channel": o.channel,
            "user_id": o.user_id, "delivery_id": o.delivery_id, "attempt": o.attempt, "reason": o.reason,
            "duplicate_of": o.duplicate_of, "ts": o.ts}  # fmt: skip


@dataclass
class Entry:
    """A dead letter as the dashboard holds it: where it sits on the DLQ topic, and whose it is."""

    partition: int
    offset: int
    letter: DeadLetter
    replayed_at: float | None = None

    @property
    def id(self) -> str:
        return f"{self.partition}:{self.offset}"


def client_of(letter: DeadLetter) -> str | None:
    """Whose a dead letter is: its key's client (keys are `client/…`) and its payload's `client_id`,
    which must agree when both are there; None when neither says."""
    from_key = letter.key.partition("/")[0] if letter.key and "/" in letter.key else None
    try:
        payload = orjson.loads(letter.payload)
    except orjson.JSONDecodeError:
        payload = None
    from_payload = payload.get("client_id") if isinstance(payload, dict) else None
    if not isinstance(from_payload, str) or not from_payload:
        from_payload = None
    if from_key and from_payload and from_key != from_payload:
        return None
    return from_key or from_payload


class DeadLetterBook:
    def __init__(self, ring: int = 200, max_clients: int = 256) -> None:
        self.clients: PerClient[deque[Entry]] = PerClient(lambda: deque(maxlen=ring), max_clients)

    def fold(self, partition: int, offset: int, key: bytes | None, value: bytes | None) -> None:
        try:
            letter = decode(DeadLetter, value)
        except PoisonMessage:  # not one clarion wrote: `clarion dlq list` shows it
            return
        client_id = client_of(letter)
        if client_id is None:
            return
        self.clients.of(client_id).append(Entry(partition, offset, letter))

    def entries(self, client_id: str) -> list[Entry]:
        """The client's dead letters held, newest first."""
        ring = self.clients.get(client_id)
        return sorted(ring or (), key=lambda e: (e.letter.ts, e.partition, e.offset), reverse=True)

    def find(self, client_id: str, ids: list[str]) -> list[Entry]:
        wanted = set(ids)
        return [entry for entry in self.entries(client_id) if entry.id in wanted]
