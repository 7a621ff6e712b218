"""The broker-timed replay scenarios whose settings the shared worker of tests/test_replay.py does not
run with (their retry delays): each on a worker of its own."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import test_settings
from tests.replay_harness import SCENARIOS, Replayer, Scenario, assert_replayed, resolve_settings
from tests.test_replay import runs_on_shared

ON_OWN = [p for p in SCENARIOS if not runs_on_shared(p)]


@pytest.mark.parametrize("path", ON_OWN, ids=lambda p: p.stem)
async def test_replay_on_own_worker(path: Path, broker, redis_server, simulator, tmp_path: Path) -> None:
    sim, sim_url = simulator
    scenario = Scenario.load(path)
    overrides = resolve_settings(scenario.settings, sim, sim_url, tmp_path)
    replayer = Replayer(test_settings(broker, redis_server.url, sim_url, tmp_path, **overrides), sim)
    await replayer.prepare()
    got = await replayer.through_worker(scenario, tmp_path / "worker.log")
    assert_replayed(scenario, got, replayer, tmp_path / "worker.log")
