"""Re-read a record faust dropped: a hole below every acked offset that nobody is handling.

Seen after a crash, on a worker recovering its tables from the changelogs: records
fetched while the tables were still recovering were dropped by faust (flow control off),
and the seek that follows recovery did not bring them back (the consumer's read offset
had already passed them). Nothing acked them, so faust never commits past them: their
partition's committed offset stays put while later records are acked, and those
messages wait until the next rebalance or restart (in test_promo_crash, 110 of 10,000
campaign executions). faust's own sources list the family of bugs (#315).

Every `check_s`, for each partition this worker consumes, a hole is the committed
offset when (a) later offsets of the partition have been acked, (b) no message at that
offset is being handled, and (c) both held at the previous check too. Then the consumer
seeks back to it: the records from there on are read again, which every stage handles
idempotently (the delivery ledger answers repeats), and the hole is logged.
"""

from __future__ import annotations

import logging
from typing import Any

from clarion.logs import event
from clarion.topology import faust_compat

log = logging.getLogger("clarion.gaps")


def holes(consumer: Any) -> dict[Any, int]:
    """Partition -> the committed offset, where later offsets are acked and that one is not in hand."""
    in_hand = {(m.tp, m.offset) for m in faust_compat.unacked_messages(consumer)}
    found = {}
    for tp, acked in faust_compat.acked_offsets(consumer).items():
        committed = faust_compat.committed_offset(consumer, tp)
        if committed is None or not acked or min(acked) <= committed:
            continue
        if (tp, committed) not in in_hand:
            found[tp] = committed
    return found


class GapHealer:
    """Seeks a partition back to a hole seen at two checks in a row (see the module docstring)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.seen: dict[Any, int] = {}
        self.healed = 0

    async def check(self) -> None:
        consumer = self.app.consumer
        now = holes(consumer)
        for tp, offset in now.items():
            if self.seen.get(tp) == offset:
                event(log, "a record below acked ones was never handled: reading the partition again from it",
                      logging.WARNING, topic=tp.topic, partition=tp.partition, offset=offset)  # fmt: skip
                await consumer.seek(tp, offset)
                self.healed += 1
        self.seen = {tp: offset for tp, offset in now.items() if self.seen.get(tp) != offset}
