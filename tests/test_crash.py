"""Workers SIGKILLed while their provider calls are in flight: nothing lost, nothing sent twice.

The provider answers after 200 ms, so each kill lands with hundreds of deliveries taken
and calls in flight. Their fate is settled by the worker's sender process, which outlives the worker
(providers/sender.py); the worker that takes over replays the records and finds each
delivery in the ledger. Counted at the simulator, which records every delivery it takes.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

from clarion.providers.simulator import start_simulator
from clarion.topology.embedded import free_port
from clarion.topology.worker import WorkerProcess
from tests.conftest import test_settings
from tests.replay_harness import Replayer, Scenario

CLIENT = "c"
TEMPLATE = {"client_id": CLIENT, "template_id": "otp", "version": 1, "sms_body": "Code {{ n }}",
            "email_subject": "Code", "email_text": "Code {{ n }}"}  # fmt: skip
USERS = 40
WAVE = 300  # requests (x 2 channels) fed before each worker that is killed


def setup() -> Scenario:
    steps: list[dict[str, Any]] = [{"input": "templates", "key": f"{CLIENT}/otp@1", "value": TEMPLATE}]
    for u in range(USERS):
        user = {"client_id": CLIENT, "user_id": f"u{u}", "phone": f"+1415555{u:04d}", "email": f"u{u}@example.com"}
        steps.append({"input": "users", "key": f"{CLIENT}/u{u}", "value": user})
    return Scenario(steps=steps)


def wave(first: int, count: int) -> Scenario:
    steps = []
    for i in range(first, first + count):
        user_id = f"u{i % USERS}"
        request = {"notification_id": f"n-{i}", "client_id": CLIENT, "idempotency_key": f"k-{i}", "user_id": user_id,
                   "channels": ["sms", "email"], "template_id": "otp", "params": {"n": i}}  # fmt: skip
        steps.append({"input": "critical.requests", "key": f"{CLIENT}/{user_id}", "value": request})
    return Scenario(steps=steps)


def settled(got: dict[str, list[dict[str, Any]]]) -> set[str]:
    return {o["delivery_id"] for o in got["outcomes"] if o["status"] == "sent"}


async def quiet(delivered: list[Any], for_s: float = 1.0) -> None:
    """Wait until no delivery has arrived for `for_s` seconds."""
    seen, since = len(delivered), time.monotonic()
    while time.monotonic() - since < for_s:
        await asyncio.sleep(0.05)
        if len(delivered) != seen:
            seen, since = len(delivered), time.monotonic()


async def until(predicate: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.01)


async def test_sigkill_mid_flight_loses_nothing_and_sends_nothing_twice(broker, redis_server, tmp_path: Path) -> None:
    port = free_port()
    sim, runner = await start_simulator("127.0.0.1", port, latency_ms=200)
    settings = test_settings(broker, redis_server.url, f"http://127.0.0.1:{port}", tmp_path, critical_partitions=4)
    replayer = Replayer(settings, sim)
    await replayer.prepare()
    expected = {f"n-{i}.{channel}.0" for i in range(2 * WAVE) for channel in ("sms", "email")}
    delivered = sim.state.deliveries
    logs = []
    try:
        await replayer.feed(setup())
        for n in range(2):  # two workers killed mid-flight, each with a fresh wave of requests to deliver
            await quiet(delivered)  # the last one's sender has finished
            kill_at = len(delivered) + 50
            await replayer.feed(wave(n * WAVE, WAVE))
            logs.append(tmp_path / f"killed-{n}.log")
            worker = WorkerProcess(settings, logs[-1]).start()
            try:
                await until(lambda k=kill_at: len(delivered) >= k, 240, f"wave {n}: not {kill_at} delivered")
            finally:
                os.kill(worker.proc.pid, signal.SIGKILL)
                worker.proc.wait()
        logs.append(tmp_path / "last.log")
        worker = WorkerProcess(settings, logs[-1]).start()
        try:
            await until(lambda: len(delivered) >= len(expected), 240, f"only {len(delivered)} of {len(expected)}")
            # the outcomes of what the killed workers' senders settled come from the replay: once the
            # worker has drained every input, they are all on the outcomes topic
            got = await replayer.collect(Scenario(steps=[]), drain_timeout_s=240)  # a deadline, as above
        finally:
            worker.stop()
    finally:
        await runner.cleanup()

    counts = Counter(d["did"] for d in delivered)
    assert set(counts) == expected, f"lost {sorted(expected - set(counts))[:5]}"
    assert [did for did, n in counts.items() if n > 1] == [], "sent twice"
    assert got["dlq"] == [] and not [o for o in got["outcomes"] if o["status"] == "dead_lettered"]
    assert settled(got) == expected and {o["status"] for o in got["outcomes"]} <= {"accepted", "retrying", "sent"}
    # the kills did land mid-flight: each sender had calls in hand when its worker died
    for log in logs[:2]:
        assert "finishing the batches in hand" in log.read_text(), f"{log.name}: the kill found nothing in flight"
