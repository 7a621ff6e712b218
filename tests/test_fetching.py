"""The worker's fetch wait: short when busy, long when idle, growing when a partition stalls."""

from __future__ import annotations

from clarion.topology.fetching import STALLED_MAX_MS, FetchWait


def test_short_while_records_flow_long_once_idle() -> None:
    wait = FetchWait(busy_ms=10, idle_ms=200, idle_after_s=2.0, last_records_at=0.0)
    assert wait.after_fetch(True, False, now=1.0) == 10
    assert wait.after_fetch(False, False, now=2.5) == 10  # idle for 1.5 s: still short
    assert wait.after_fetch(False, False, now=3.5) == 200
    assert wait.after_fetch(True, False, now=3.6) == 10  # records again: short at once


def test_a_stalled_partition_doubles_the_wait_until_records_come() -> None:
    wait = FetchWait(busy_ms=10, idle_ms=200, idle_after_s=2.0, last_records_at=0.0)
    waits = [wait.after_fetch(False, True, now=0.1 * i) for i in range(12)]
    assert waits[:5] == [20, 40, 80, 160, 320]
    assert max(waits) == STALLED_MAX_MS
    assert wait.after_fetch(True, False, now=2.0) == 10
