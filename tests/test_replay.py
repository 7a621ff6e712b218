"""Topology replay: the tests/replay/*.jsonl scenarios that depend on the broker's timing (retries, expiry,
windows, held channels), each through a real worker on the embedded broker; the rest run in memory
(tests/test_replay_memory.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import test_settings
from tests.replay_harness import IN_MEMORY, Replayer, Scenario, canonical, rejections, resolve_settings

SPREAD = True  # each scenario starts its own worker: under xdist they run in any process
SCENARIOS = [p for p in sorted((Path(__file__).parent / "replay").glob("*.jsonl")) if p.stem not in IN_MEMORY]


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
async def test_replay(path: Path, broker, redis_server, simulator, tmp_path: Path) -> None:
    sim, sim_url = simulator
    scenario = Scenario.load(path)
    overrides = resolve_settings(scenario.settings, sim, sim_url, tmp_path)
    settings = test_settings(broker, redis_server.url, sim_url, tmp_path, **overrides)
    replayer = Replayer(settings, sim)
    await replayer.prepare()
    got = await replayer.through_worker(scenario, tmp_path / "worker.log")
    log_tail = "\n".join((tmp_path / "worker.log").read_text().splitlines()[-30:])
    for name in ("outcomes", "dlq"):
        have, want = canonical(got[name]), canonical(scenario.expected[name])
        extra, missing = sorted(set(have) - set(want)), sorted(set(want) - set(have))
        assert have == want, f"{name}: extra {extra}, missing {missing}\n{log_tail}"
    receipts = [{k: d.get(k) for k in ("channel", "address", "nid", "did")} for d in sim.state.deliveries]
    assert canonical(receipts) == canonical(scenario.receipts)
    if scenario.rejected:  # the simulator's refusals: the exact number of calls it turned away
        assert canonical(rejections(sim)) == canonical(scenario.rejected)
