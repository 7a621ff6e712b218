"""Replay a scenario file through the real topology on the embedded broker.

A scenario is JSON lines, applied in order:
  {"input": "<catalog topic>", "key": "...", "value": {...}}   produce a record
  {"input": "<catalog topic>", "key": "...", "raw": "..."}     produce raw bytes (poison)
  {"input": ..., "key": ..., "value": {...}, "expires_in_s": s}   value["expires_at"] = now + s when produced
  {"fault": {"channel": ..., "kind": ..., "address": ..., "times": n}}   simulator fault
  {"sim": {"fcm.expire_next": 2}}   set simulator attributes (dotted paths from the Simulator)
  {"settings": {...}}   settings overrides for this scenario's worker; the value "simulator" for
      fcm_service_account_file: a service-account file the simulator issued (see resolve_settings)
  {"barrier": {"users": n, "templates": n}}   wait until the worker holds that many users / template versions
      ("deliveries": n: until the simulator has accepted n deliveries;
       "suppressed_addresses": n: until the suppression table holds n addresses over all users)
  {"tombstones": {"idempotency": n}}   wait until that many keys were deleted from a table
  {"expect": "outcomes" | "dlq", "value": {...}}   an expected output record
  {"receipt": {"channel": ..., "address": ..., "nid": ..., "did": ...}}   an expected delivery
  {"rejected": {"channel": ..., "address": ..., "kind": ..., "reason"?: ..., "code"?: ...}}   an expected
      simulator refusal; when a scenario lists any, the refusals are compared exactly too (REJECTED_KEYS)
A scenario runs on a worker of its own (`through_worker`) or on one that other scenarios share
(`on_worker`): then its replayer's `tag` prefixes every client id, notification id and input key it
feeds (so no table, ledger or idempotency key of one scenario is another's), its barriers count only
its own keys, its outputs are read from where the output topics ended when it started, and the tag
is taken off again before comparing.
Outputs are read once the worker has drained (its group committed every topic a stage consumes to
its end) and up to the output topics' end offsets, then compared exactly, as multisets, after
dropping timestamps and trace ids: a missing or an extra record fails. Expected records may omit
fields that hold their schema default.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from clarion.keys import create_key
from clarion.schemas.records import DeadLetter, Outcome, asdict
from clarion.topology.admin import ensure_topics
from clarion.topology.catalog import catalog
from clarion.topology.offsets import BrokerOffsets
from clarion.topology.settings import Settings
from tests.drain import drained

IGNORED = {"ts", "trace_id", "provider_message_id", "not_before", "accepted_at"}
MODELS = {"outcomes": Outcome, "dlq": DeadLetter}
# Scenarios with no retry waits, no expiry, no windows: what a stage does with each record and the
# provider's answer. tests/test_replay_memory.py runs them in memory; the rest (SCENARIOS) run on the
# broker: tests/test_replay.py on one shared worker, test_replay_own_worker.py on a worker each.
IN_MEMORY = (
    "happy_path_per_channel", "batched_requests", "duplicate_idempotency_key", "missing_address",
    "unknown_template", "permanent_failure", "poison_message", "poison_template",
    "suppressed_apns", "suppressed_fcm", "suppressed_sms",
)  # fmt: skip
SCENARIOS = [p for p in sorted((Path(__file__).parent / "replay").glob("*.jsonl")) if p.stem not in IN_MEMORY]
REJECTED_KEYS = ("channel", "address", "kind", "reason", "code")  # what a simulator refusal is compared on
RECEIPT_KEYS = ("channel", "address", "nid", "did")  # what a simulator delivery is compared on
TAGGED = ("client_id", "notification_id", "delivery_id")  # the ids a shared worker's scenarios keep apart
UNTAGGED = (*TAGGED, "key")  # what the tag is taken off in outputs (a dead letter's record key too)


@dataclass
class Scenario:
    steps: list[dict[str, Any]]
    settings: dict[str, Any] = field(default_factory=dict)
    expected: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: {"outcomes": [], "dlq": []})
    receipts: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path) -> Scenario:
        lines = [orjson.loads(line) for line in path.read_text().splitlines() if line.strip()]
        steps = [line for line in lines if not {"expect", "receipt", "rejected", "settings"} & line.keys()]
        scenario = cls(steps=steps)
        for line in lines:
            scenario.settings.update(line.get("settings", {}))
        for line in lines:
            if "expect" in line:
                scenario.expected[line["expect"]].append(normalize(line["expect"], line["value"]))
            elif "receipt" in line:
                scenario.receipts.append(line["receipt"])
            elif "rejected" in line:
                scenario.rejected.append(line["rejected"])
        return scenario


def apply_to_simulator(step: dict[str, Any], sim: Any) -> None:
    """A scenario's `fault` (injected) or `sim` (attributes set, dotted paths from the Simulator) step."""
    if "fault" in step:
        from clarion.providers.simulator import Fault

        sim.state.faults.append(Fault(**step["fault"]))
    for path, value in step.get("sim", {}).items():
        *owners, name = path.split(".")
        target = sim
        for owner in owners:
            target = getattr(target, owner)
        setattr(target, name, value)


def rejections(sim: Any) -> list[dict[str, Any]]:
    """The simulator's refusals so far, each reduced to REJECTED_KEYS (those it has)."""
    return [{k: r[k] for k in REJECTED_KEYS if r.get(k) is not None} for r in sim.state.rejected]


def resolve_settings(overrides: dict[str, Any], sim: Any, sim_url: str, directory: Path) -> dict[str, Any]:
    """Scenario settings with placeholders filled: fcm_service_account_file "simulator" becomes a
    service-account file the simulator issued (its token endpoint mints the worker's access tokens)."""
    out = dict(overrides)
    if out.get("fcm_service_account_file") == "simulator":
        path = directory / "fcm-service-account.json"
        path.write_bytes(orjson.dumps(sim.fcm.service_account(f"{sim_url}/token")))
        out["fcm_service_account_file"] = str(path)
    return out


def normalize(topic: str, value: dict[str, Any]) -> dict[str, Any]:
    """Full record with defaults filled, minus ignored fields; JSON payloads parsed."""
    record = asdict(MODELS[topic](**value))
    if topic == "dlq":
        try:
            payload = orjson.loads(record["payload"])
            if isinstance(payload, dict):
                record["payload"] = {k: v for k, v in payload.items() if k not in IGNORED}
        except orjson.JSONDecodeError:
            pass
    return {k: v for k, v in record.items() if k not in IGNORED}


def canonical(records: list[dict[str, Any]]) -> list[str]:
    return sorted(orjson.dumps(r, option=orjson.OPT_SORT_KEYS).decode() for r in records)


async def changelog_state(bootstrap: str, topic: str) -> dict[bytes, bytes | None]:
    """The latest value per key on a changelog topic right now (None: a tombstone)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        if topic not in await consumer.topics():
            return {}
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        end = await consumer.end_offsets(parts)
        state: dict[bytes, bytes | None] = {}
        while True:
            positions = [await consumer.position(tp) for tp in parts]
            if all(pos >= end[tp] for pos, tp in zip(positions, parts, strict=True)):
                return state
            for records in (await consumer.getmany(timeout_ms=200)).values():
                state.update((r.key, r.value) for r in records)
    finally:
        await consumer.stop()


class Replayer:
    def __init__(self, settings: Settings, sim: Any, tag: str = "") -> None:
        self.settings = settings
        self.sim = sim
        self.specs = catalog(settings)
        self.bootstrap = settings.bootstrap_servers
        self.keys: dict[str, str] = {}  # client -> an API key to read its templates from the worker
        self.tag = tag  # prefixed to the ids this replayer feeds (see the module's docstring)
        self.outputs = [TopicPartition(self.specs[name].topic, p) for name in MODELS
                        for p in range(self.specs[name].partitions)]  # fmt: skip

    async def prepare(self) -> None:
        await ensure_topics(self.bootstrap, list(self.specs.values()))

    async def key_for(self, client_id: str) -> str:
        if client_id not in self.keys:
            self.keys[client_id], _ = await create_key(self.settings, client_id, ["templates"])
        return self.keys[client_id]

    async def through_worker(
        self, scenario: Scenario, log_path: Path, settings: Settings | None = None, feed_first: bool = False
    ) -> dict[str, list[dict[str, Any]]]:
        """Start a worker (with `settings`, default this replayer's), feed the scenario, collect, stop.

        `feed_first`: put the inputs on the topics before the worker starts.
        """
        from clarion.topology.worker import WorkerProcess

        if feed_first:
            await self.feed(scenario)
        worker = WorkerProcess(settings or self.settings, log_path).start()
        try:
            await worker.wait_ready()
            if not feed_first:
                await self.feed(scenario)
            return await self.collect(scenario)
        finally:
            worker.stop()

    async def on_worker(self, scenario: Scenario) -> dict[str, list[dict[str, Any]]]:
        """Feed the scenario to the running worker these settings name, and collect what it adds."""
        since = await self.output_ends()
        await self.feed(scenario)
        return await self.collect(scenario, since)

    def tagged(self, step: dict[str, Any]) -> dict[str, Any]:
        """An input step in this replayer's namespace: its key and TAGGED ids prefixed with the tag."""
        if not self.tag:
            return step
        out = {**step, "key": self.tag + step["key"]}
        if "value" in step:
            out["value"] = {k: self.tag + v if k in TAGGED and isinstance(v, str) else v
                            for k, v in step["value"].items()}  # fmt: skip
        return out

    def untagged(self, record: dict[str, Any], names: tuple[str, ...] = UNTAGGED) -> dict[str, Any]:
        """A record with the tag taken off its `names` fields (a dead letter's payload too)."""
        out = {k: v.removeprefix(self.tag) if k in names and isinstance(v, str) else v for k, v in record.items()}
        if isinstance(out.get("payload"), dict):
            out["payload"] = self.untagged(out["payload"], names)
        return out

    def _mine(self, key: bytes | None) -> bool:
        """Whether a changelog key (a JSON string or raw bytes) is one this replayer fed."""
        return not self.tag or (key or b"").lstrip(b'"').startswith(self.tag.encode())

    def receipts(self) -> list[dict[str, Any]]:
        """The simulator's accepted deliveries, reduced to RECEIPT_KEYS and untagged."""
        rows = [{k: d.get(k) for k in RECEIPT_KEYS} for d in self.sim.state.deliveries]
        return [self.untagged(row, ("nid", "did")) for row in rows]

    async def feed(self, scenario: Scenario) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all", linger_ms=5)
        await producer.start()
        try:
            for step in scenario.steps:
                if "input" in step:
                    step = self.tagged(step)
                    if step["input"] == "templates":
                        await self.key_for(step["value"]["client_id"])
                    if "expires_in_s" in step:
                        step = {**step, "value": {**step["value"], "expires_at": time.time() + step["expires_in_s"]}}
                    value = step["raw"].encode() if "raw" in step else orjson.dumps(step["value"])
                    await producer.send_and_wait(self.specs[step["input"]].topic, value=value, key=step["key"].encode())
                elif "fault" in step or "sim" in step:
                    apply_to_simulator(step, self.sim)
                elif "barrier" in step:
                    await self.barrier(step["barrier"], live=True)
                elif "tombstones" in step:
                    await self.barrier(step["tombstones"], live=False)
        finally:
            await producer.stop()

    async def barrier(self, counts: dict[str, int], live: bool, timeout_s: float = 60.0) -> None:
        """Wait until each table's changelog holds `n` live keys (or `n` tombstones)."""
        deadline = time.monotonic() + timeout_s
        for table, want in counts.items():
            topic = f"{self.settings.app_id}-{table}-changelog"
            while True:
                if table == "templates":  # not a faust table: ask the worker what it holds
                    have = await self.worker_template_versions()
                elif table == "deliveries":  # not a table: what the simulator accepted
                    have = len(self.sim.state.deliveries)
                elif table == "suppressed_addresses":  # one key per user, one entry per address
                    state = await changelog_state(self.bootstrap, f"{self.settings.app_id}-suppressed-changelog")
                    have = sum(len(orjson.loads(v)) for k, v in state.items() if v is not None and self._mine(k))
                else:
                    state = await changelog_state(self.bootstrap, topic)
                    have = sum((v is not None) == live for k, v in state.items() if self._mine(k))
                if have >= want:
                    break
                if time.monotonic() > deadline:
                    kind = "live keys" if live else "tombstones"
                    raise TimeoutError(f"{table} changelog has {have} {kind}, waiting for {want}")
                await asyncio.sleep(0.2)

    async def worker_template_versions(self) -> int:
        """Template versions the worker holds, summed over the clients the scenario has templates for."""
        url = f"http://127.0.0.1:{self.settings.web_port}/templates/"
        held = 0
        async with aiohttp.ClientSession() as http:
            for key in self.keys.values():
                try:
                    async with http.get(url, headers={"Authorization": f"Bearer {key}"}) as resp:
                        held += len((await resp.json())["versions"]) if resp.status == 200 else 0
                except aiohttp.ClientError:
                    pass
        return held

    def _strip_prefix(self, record: dict[str, Any]) -> dict[str, Any]:
        if "source_topic" in record:
            record["source_topic"] = record["source_topic"].removeprefix(self.settings.topic_prefix + ".")
        return record

    async def output_ends(self) -> dict[TopicPartition, int]:
        """Where the output topics end now."""
        offsets = BrokerOffsets(self.settings)
        try:
            return await offsets.end_offsets(self.outputs)
        finally:
            await offsets.close()

    async def collect(
        self, scenario: Scenario, since: dict[TopicPartition, int] | None = None, drain_timeout_s: float = 90.0
    ) -> dict[str, list[dict[str, Any]]]:
        """Once the worker has drained (tests/drain.py), every outcome and dead letter from `since`
        (default: the topics' beginnings) to the end offsets, untagged."""
        await drained(self.settings, drain_timeout_s)
        parts = self.outputs
        names = {self.specs[name].topic: name for name in MODELS}
        ends = await self.output_ends()
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
        await consumer.start()
        got: dict[str, list[dict[str, Any]]] = {name: [] for name in MODELS}
        try:
            consumer.assign(parts)
            await consumer.seek_to_beginning(*parts)
            for tp, offset in (since or {}).items():
                consumer.seek(tp, offset)
            deadline = time.monotonic() + 30
            while [tp for tp in parts if await consumer.position(tp) < ends[tp]]:
                if time.monotonic() > deadline:
                    raise TimeoutError("could not read the outputs to their end offsets")
                for tp, records in (await consumer.getmany(*parts, timeout_ms=200)).items():
                    for record in records:
                        if record.offset >= ends[tp]:
                            continue
                        value = orjson.loads(record.value)  # one record, or a batch of them
                        for item in value if isinstance(value, list) else [value]:
                            normalized = self._strip_prefix(normalize(names[tp.topic], item))
                            got[names[tp.topic]].append(self.untagged(normalized))
            return got
        finally:
            await consumer.stop()


def assert_replayed(scenario: Scenario, got: dict[str, list[dict[str, Any]]], replayer: Replayer, log: Path) -> None:
    """Outputs, deliveries and (when the scenario lists them) refusals exactly as the scenario expects."""
    log_tail = "\n".join(log.read_text().splitlines()[-30:])
    for name in ("outcomes", "dlq"):
        have, want = canonical(got[name]), canonical(scenario.expected[name])
        extra = sorted((Counter(have) - Counter(want)).elements())  # counted: a record told twice is extra
        missing = sorted((Counter(want) - Counter(have)).elements())
        assert have == want, f"{name}: extra {extra}, missing {missing}\n{log_tail}"
    assert canonical(replayer.receipts()) == canonical(scenario.receipts)
    if scenario.rejected:  # the simulator's refusals: the exact number of calls it turned away
        assert canonical(rejections(replayer.sim)) == canonical(scenario.rejected)
