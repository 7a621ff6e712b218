"""How agents write: records to catalog topics, outcomes (folded into the status), dead letters."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import faust

from clarion.logs import event
from clarion.schemas.codec import encode
from clarion.schemas.records import DeadLetter, Outcome
from clarion.tables.changelog import ChangelogWriter
from clarion.tables.status import StatusBoard
from clarion.topology.catalog import TopicSpec
from clarion.topology.outbox import Outbox

log = logging.getLogger("clarion.topology")


class Emitters:
    """Every record a worker writes goes through here, to faust's producer (flushed before commits)."""

    def __init__(
        self, app: faust.App, specs: dict[str, TopicSpec], status_table: Any, clock: Callable[[], float]
    ) -> None:
        self.app = app
        self.specs = specs
        self.clock = clock
        self.statuses = StatusBoard(self.writer(status_table))
        self.counters: Counter[tuple[str, ...]] = Counter()
        self.outcomes: Counter[tuple[str, str, str]] = Counter()  # (lane, channel, status): /metrics reads it

    def writer(self, table: Any) -> ChangelogWriter:
        return ChangelogWriter(self, table)

    def outbox(self) -> Outbox:
        return Outbox(self)

    async def produce(self, name: str, key: str, value: bytes, partition: int | None = None) -> Awaitable[Any]:
        """Hand one record for the catalog topic `name` to faust's producer."""
        return await self.send_record(self.specs[name].topic, key.encode(), value, partition)

    async def send_record(self, topic: str, key: bytes, value: bytes | None, partition: int | None) -> Awaitable[Any]:
        """Every record the worker writes goes through here (faust's producer, flushed before commits)."""
        return await self.app.producer.send(topic, key, value, partition, None, None)

    def outcome(self, out: Outbox, partition: int, status: str, source: Any, **fields: Any) -> None:
        """Fold an outcome for `source` (a request or a delivery task) into its status and queue it."""
        record = Outcome(
            notification_id=source.notification_id,
            status=status,
            client_id=source.client_id,
            user_id=source.user_id,
            trace_id=source.trace_id,
            ts=self.clock(),
            lane=getattr(source, "lane", "") or ("promo" if getattr(source, "campaign", "") else "critical"),
            **fields,
        )
        if not getattr(source, "campaign", ""):  # a campaign's executions have no status entry: its job counts them
            self.statuses.fold(partition, record)
        self.counters[("outcome", fields.get("channel") or "-", status)] += 1
        self.outcomes[(record.lane, fields.get("channel") or "none", status)] += 1
        if log.isEnabledFor(logging.DEBUG):
            event(log, "outcome", level=logging.DEBUG, notification_id=record.notification_id, status=status, **fields)
        out.add("outcomes", record.notification_id, encode(record))

    def dead_letter(
        self,
        out: Outbox,
        source_topic: str,
        reason: str,
        payload: bytes | str | None,
        key: bytes | str | None,
        **ids: Any,
    ) -> None:
        """Queue a message for the DLQ with the reason; the agent then goes on."""
        text = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else (payload or "")
        key_text = key.decode("utf-8", "replace") if isinstance(key, bytes) else key
        letter = DeadLetter(
            source_topic=source_topic, reason=reason, payload=text, key=key_text, ts=self.clock(), **ids
        )
        self.counters[("dead_letter", source_topic)] += 1
        event(log, "dead_lettered", level=logging.WARNING, source_topic=source_topic, reason=reason, **ids)
        out.add("dlq", key_text or "", encode(letter))
