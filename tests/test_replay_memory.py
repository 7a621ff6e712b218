"""The replay scenarios that need no broker timing, through the topology on faust's in-memory test context."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.memory_pipeline import MemoryPipeline, memory_settings
from tests.replay_harness import IN_MEMORY, Scenario, canonical, rejections, resolve_settings

REPLAY = Path(__file__).parent / "replay"


@pytest.mark.parametrize("name", IN_MEMORY)
async def test_replay_in_memory(name: str, simulator, tmp_path: Path) -> None:
    sim, sim_url = simulator
    scenario = Scenario.load(REPLAY / f"{name}.jsonl")
    settings = memory_settings(tmp_path, sim_url, **resolve_settings(scenario.settings, sim, sim_url, tmp_path))
    pipeline = MemoryPipeline(settings, sim)
    try:
        got = await pipeline.run(scenario)
    finally:
        await pipeline.close()
    for topic in ("outcomes", "dlq"):
        have, want = canonical(got[topic]), canonical(scenario.expected[topic])
        assert have == want, f"{topic}: extra {sorted(set(have) - set(want))}, missing {sorted(set(want) - set(have))}"
    receipts = [{k: d.get(k) for k in ("channel", "address", "nid", "did")} for d in sim.state.deliveries]
    assert canonical(receipts) == canonical(scenario.receipts)
    if scenario.rejected:
        assert canonical(rejections(sim)) == canonical(scenario.rejected)
