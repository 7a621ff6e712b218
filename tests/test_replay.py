"""Topology replay: the tests/replay/*.jsonl scenarios that depend on the broker's timing (retries, expiry,
windows, held channels), through real workers on the embedded broker; the rest run in memory
(tests/test_replay_memory.py).

The scenarios share one worker and one simulator, one after the other: each replays in a namespace of
its own (tests/replay_harness.py: a tag on its ids) and the simulator forgets the last one's faults
and deliveries. A scenario whose settings the shared worker does not run with (retry delays) starts
a worker of its own: tests/test_replay_own_worker.py.

What the shared worker keeps from one scenario to the next, and why it cannot change the next one's
records: credentials (the simulator keeps honouring what it issued; a revoked or expired one is
reminted within the scenario that revoked it); an auth hold (0.45 s, over before its scenario's
last send); the circuit breaker's streak (20 transient failures in a row open it; the most a scenario
makes is 3, and any success resets it). Rate buckets are off (no `provider_rates`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from clarion.providers.simulator import Simulator, start_simulator
from clarion.topology.embedded import free_port
from clarion.topology.settings import Settings
from clarion.topology.worker import WorkerProcess
from tests.conftest import test_settings
from tests.replay_harness import SCENARIOS, Replayer, Scenario, assert_replayed, resolve_settings

# The shared worker's settings: a scenario asking for none but these runs on it; the others run in
# tests/test_replay_own_worker.py.
SHARED_SETTINGS: dict[str, Any] = {
    "fcm_service_account_file": "simulator",
    "provider_auth_hold_s": 0.45,
    "dedupe_window_s": 1.0,
    "dedupe_prune_interval_s": 0.5,
}


def runs_on_shared(path: Path) -> bool:
    return Scenario.load(path).settings.items() <= SHARED_SETTINGS.items()


ON_SHARED = [p for p in SCENARIOS if runs_on_shared(p)]


@dataclass
class SharedWorker:
    settings: Settings
    sim: Simulator
    log_path: Path


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared(broker, redis_server, tmp_path_factory) -> AsyncIterator[SharedWorker]:
    tmp = Path(tmp_path_factory.mktemp("replay"))
    port = free_port()
    sim, runner = await start_simulator("127.0.0.1", port)
    sim_url = f"http://127.0.0.1:{port}"
    overrides = resolve_settings(SHARED_SETTINGS, sim, sim_url, tmp)
    settings = test_settings(broker, redis_server.url, sim_url, tmp, **overrides)
    await Replayer(settings, sim).prepare()
    worker = WorkerProcess(settings, tmp / "worker.log").start()
    try:
        await worker.wait_ready()
        yield SharedWorker(settings, sim, tmp / "worker.log")
    finally:
        worker.stop()
        await runner.cleanup()


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("path", ON_SHARED, ids=lambda p: p.stem)
async def test_replay_on_shared_worker(path: Path, shared: SharedWorker) -> None:
    shared.sim.state.clear()
    scenario = Scenario.load(path)
    replayer = Replayer(shared.settings, shared.sim, tag=f"r{ON_SHARED.index(path)}-")
    got = await replayer.on_worker(scenario)
    assert_replayed(scenario, got, replayer, shared.log_path)
