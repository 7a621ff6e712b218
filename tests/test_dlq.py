"""`clarion dlq`: a dead-lettered delivery replayed after the fault is cleared is sent once, and only once."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from clarion.dlq import read_letters, replay
from clarion.providers.simulator import Fault
from clarion.topology.settings import Settings
from clarion.topology.worker import WorkerProcess
from tests.conftest import run_clarion, test_settings
from tests.replay_harness import Replayer, Scenario

CLIENT = "c"
PHONE = "+14155550123"


def scenario() -> Scenario:
    template = {"client_id": CLIENT, "template_id": "otp", "version": 1, "sms_body": "Code {{ n }}"}
    user = {"client_id": CLIENT, "user_id": "u1", "phone": PHONE}
    steps = [
        {"input": "templates", "key": f"{CLIENT}/otp@1", "value": template},
        {"input": "users", "key": f"{CLIENT}/u1", "value": user},
    ]
    for i in range(3):
        request = {"notification_id": f"n-{i}", "client_id": CLIENT, "idempotency_key": f"k-{i}", "user_id": "u1",
                   "channels": ["sms"], "template_id": "otp", "params": {"n": i}}  # fmt: skip
        steps.append({"input": "critical.requests", "key": f"{CLIENT}/u1", "value": request})
    return Scenario(steps=steps)


async def until(predicate: Callable[[], Awaitable[bool]], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not await predicate():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.1)


def clarion_dlq(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return run_clarion(settings, "dlq", *args)


async def test_replay_after_the_fault_delivers_once_and_a_second_replay_sends_nothing(
    broker, redis_server, simulator, tmp_path: Path
) -> None:
    sim, sim_url = simulator
    settings = test_settings(broker, redis_server.url, sim_url, tmp_path, max_attempts=2)
    replayer = Replayer(settings, sim)
    await replayer.prepare()
    sim.state.faults.append(Fault("sms", "transient", PHONE))  # the provider is down for this number
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    try:
        await worker.wait_ready()
        await replayer.feed(scenario())

        async def dead_letters() -> bool:
            return len(await read_letters(settings)) >= 3

        await until(dead_letters, 60, "three deliveries dead-lettered")
        assert sim.state.deliveries == []
        listed = await asyncio.to_thread(clarion_dlq, settings, "list", "--reason", "retries_exhausted")
        assert listed.returncode == 0 and listed.stdout.count("retries_exhausted") == 3, listed.stderr
        first_id = listed.stdout.split()[0]
        shown = await asyncio.to_thread(clarion_dlq, settings, "show", first_id)
        assert shown.returncode == 0 and '"delivery_id"' in shown.stdout

        sim.state.faults.clear()  # the fault is fixed
        done = await asyncio.to_thread(clarion_dlq, settings, "replay", "--reason", "retries_exhausted")
        assert done.returncode == 0 and "replayed 3" in done.stdout and "3 delivery(ies) released" in done.stdout

        async def delivered() -> bool:
            return len(sim.state.deliveries) >= 3

        await until(delivered, 30, f"only {len(sim.state.deliveries)} of 3 delivered after the replay")
        assert sorted(d["did"] for d in sim.state.deliveries) == [f"n-{i}.sms.0" for i in range(3)]

        again = await replay(settings, await read_letters(settings))  # everything, a second time
        assert again.replayed == 3 and again.dead_released == 0
        got = await replayer.collect(Scenario(steps=[]))
        sent = [o for o in got["outcomes"] if o["status"] == "sent"]
        assert len(sent) == 6  # each delivery: sent on the first replay, the same outcome repeated on the second
        assert len(sim.state.deliveries) == 3  # and nothing sent twice
    finally:
        worker.stop()
