"""A scenario through the worker's topology in one process, on faust's in-memory test context.

For the scenarios that do not depend on broker timing (no retry waits, no expiry): every
record a stage writes to a topic that an agent consumes is put to that agent, on the
partition its key picks, until nothing is left; outcomes and dead letters are collected
as the worker would have written them. Tables are in memory, the delivery ledger is the
in-process one, providers are the real clients against the simulator. The scenarios that
need the broker's timing (retries, expiry, recovery, crashes) run on it (tests/test_replay.py).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from pathlib import Path
from typing import Any

import orjson

from clarion.schemas.codec import decode
from clarion.schemas.records import TemplateVersion
from clarion.topology.app import create_app
from clarion.topology.partitioning import partition_for
from clarion.topology.settings import Settings
from tests.replay_harness import MODELS, Scenario, apply_to_simulator, normalize

MAX_HANDOFFS = 10_000  # a pipeline that keeps writing to itself is a bug, not a long scenario


class NoBroker:
    """BrokerOffsets in memory: every partition is empty and caught up."""

    async def end_offsets(self, tps: Any) -> dict[Any, int]:
        return dict.fromkeys(tps, 0)

    async def committed(self, group: str, tps: Any) -> dict[Any, int]:
        return {}

    async def close(self) -> None:
        pass


class Done:
    def __init__(self, offset: int) -> None:
        self.offset = offset


class MemoryPipeline:
    def __init__(self, settings: Settings, sim: Any) -> None:
        self.app, self.topo = create_app(settings)
        self.app.conf.store = "memory://"
        self.app.finalize()
        self.app.flow_control.resume()
        self.sim = sim
        self.specs = self.topo.declared.specs
        self.by_topic = {spec.topic: name for name, spec in self.specs.items()}
        self.agents = {agent.channel.get_topic_name(): agent for agent in self.app.agents.values()}
        self.contexts: dict[str, Any] = {}
        self.pending: deque[tuple[str, bytes, bytes, int]] = deque()
        self.written: list[tuple[str, bytes]] = []  # (catalog name, value) of every record on a catalog topic
        self.topo.emit.send_record = self.send_record
        self.topo.resources.offsets = self.topo.resources.users_progress.offsets = NoBroker()

    async def send_record(self, topic: str, key: bytes, value: bytes | None, partition: int | None) -> asyncio.Future:
        name = self.by_topic.get(topic)
        if name is not None and value is not None:
            self.written.append((name, value))
            if partition is None:
                partition = partition_for(key.decode(), self.specs[name].partitions)
            if topic in self.agents:
                self.pending.append((topic, key, value, partition))
        done: asyncio.Future = asyncio.get_running_loop().create_future()
        done.set_result(Done(len(self.written)))
        return done

    async def put(self, topic: str, key: bytes, value: bytes, partition: int, timeout_s: float = 30.0) -> None:
        """Put one record to its agent and wait until the agent acked it: the stages ack a record
        after they handled it and flushed what it made (agents/guard.py)."""
        event = await self.contexts[topic].put(value, key=key, partition=partition, wait=False)
        async with asyncio.timeout(timeout_s):
            while not event.message.acked:
                await asyncio.sleep(0.002)

    async def pump(self) -> None:
        """Hand every pending record to the agent of its topic, and what that writes, until none is left."""
        for _ in range(MAX_HANDOFFS):
            if not self.pending:
                return
            await self.put(*self.pending.popleft())
        raise AssertionError(f"still writing after {MAX_HANDOFFS} records: {list(self.pending)[:3]}")

    async def run(self, scenario: Scenario) -> dict[str, list[dict[str, Any]]]:
        async with contextlib.AsyncExitStack() as stack:
            self.contexts = {topic: await stack.enter_async_context(agent.test_context())
                             for topic, agent in self.agents.items()}  # fmt: skip
            return await self._run(scenario)

    async def _run(self, scenario: Scenario) -> dict[str, list[dict[str, Any]]]:
        for step in scenario.steps:
            if "input" in step:
                value = step["raw"].encode() if "raw" in step else orjson.dumps(step["value"])
                if step["input"] == "templates":  # tailed whole by every worker: straight into its view
                    self.topo.resources.templates.add(decode(TemplateVersion, value))
                    self.topo.resources.templates.ready.set()
                    continue
                spec = self.specs[step["input"]]
                await self.put(spec.topic, step["key"].encode(), value, partition_for(step["key"], spec.partitions))
                await self.pump()
            elif "fault" in step or "sim" in step:
                apply_to_simulator(step, self.sim)
            # barriers and tombstones: every put above was handled before the next step
        await self.pump()
        retried = [name for name, _ in self.written if ".retry." in name]
        assert not retried, f"a scenario that waits for a retry belongs on the broker: {retried}"
        got: dict[str, list[dict[str, Any]]] = {name: [] for name in MODELS}
        prefix = self.topo.declared.settings.topic_prefix + "."
        for name, value in self.written:
            if name in MODELS:
                parsed = orjson.loads(value)
                for item in parsed if isinstance(parsed, list) else [parsed]:
                    record = normalize(name, item)
                    if "source_topic" in record:
                        record["source_topic"] = record["source_topic"].removeprefix(prefix)
                    got[name].append(record)
        return got

    async def close(self) -> None:
        await self.topo.resources.close()


def memory_settings(tmp_path: Path, sim_url: str, **overrides: Any) -> Settings:
    from clarion.topology.embedded import pointed_at_simulator

    base = Settings(kafka="kafka://127.0.0.1:1", data_dir=str(tmp_path / "data"), critical_partitions=2,
                    outcome_partitions=2, max_attempts=3, **overrides)  # fmt: skip
    return pointed_at_simulator(base, sim_url)
