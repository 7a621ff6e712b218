"""Agents in faust's in-memory test context: no broker, every record written is recorded."""

from __future__ import annotations

import asyncio
import inspect
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import orjson
import pytest

from clarion.agents.deliver import deliver_batch
from clarion.agents.guard import Part
from clarion.schemas import DeliveryTask, NotificationRequest, TemplateVersion, UserProfile, encode
from clarion.schemas.codec import decode_batch, encode_batch
from clarion.schemas.records import DeadLetter, Outcome
from clarion.tables.ledger import LocalLedger
from clarion.tables.status import decode_status
from clarion.topology.app import create_app
from clarion.topology.outbox import Outbox
from clarion.topology.settings import Settings
from tests.memory_pipeline import NoBroker

USER = UserProfile(client_id="c", user_id="u1", phone="+14155550100")
TEMPLATE = TemplateVersion(client_id="c", template_id="w", version=1, sms_body="Hi {{ name }}")
MODELS = {"outcomes": Outcome, "dlq": DeadLetter}


class Recorder(list):
    """Stands in for Emitters.send_record; decodes what each catalog topic received."""

    def __init__(self, topo: Any) -> None:
        super().__init__()
        self.topics = {spec.topic: name for name, spec in topo.declared.specs.items()}
        self.writes: set[tuple[str, str]] = set()  # (stage, catalog topic): held against the catalog's writers

    async def __call__(self, topic: str, key: bytes, value: bytes | None, partition: int | None) -> asyncio.Future:
        self.append((self.topics.get(topic, topic), key, value, partition))
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        fut.set_result(Seen(offset=len(self)))
        return fut

    def on(self, name: str) -> list[Any]:
        model = MODELS.get(name, DeliveryTask)
        out: list[Any] = []
        for topic, _, value, _ in self:
            if topic == name:
                items, poison = decode_batch(model, value)
                assert not poison
                out.extend(items)
        return out


def writing_stage() -> str:
    """The agents/<stage>.py module nearest on the stack (guard.py works for the stage that called it)."""
    for frame in inspect.stack(context=0):
        path = Path(frame.filename)
        if path.parent.name == "agents" and path.parent.parent.name == "clarion" and path.stem != "guard":
            return path.stem
    raise AssertionError("a record queued from outside the stages")


class RecordingOutbox(Outbox):
    """An outbox that notes which stage queued each item, for the catalog's writers."""

    def __init__(self, producing: Any, writes: set[tuple[str, str]]) -> None:
        super().__init__(producing)
        self.writes = writes

    def add(self, name: str, key: str, item: bytes, partition: int | None = None) -> None:
        self.writes.add((writing_stage(), name))
        super().add(name, key, item, partition)


class Seen(msgspec.Struct):
    offset: int = 0


@pytest.fixture
def wired(tmp_path: Path) -> Iterator[tuple[Any, Any, Recorder]]:
    settings = Settings(
        app_id=f"agents{uuid.uuid4().hex[:8]}",
        kafka="kafka://127.0.0.1:1",
        data_dir=str(tmp_path),
        critical_partitions=2,
        outcome_partitions=2,
        max_attempts=3,
        retry_base_delay_s=2.0,
    )
    app, topo = create_app(settings)
    app.conf.store = "memory://"
    app.finalize()
    app.flow_control.resume()
    recorder = Recorder(topo)
    topo.emit.send_record = recorder
    topo.emit.outbox = lambda: RecordingOutbox(topo.emit, recorder.writes)
    topo.resources.offsets = topo.resources.users_progress.offsets = NoBroker()
    yield app, topo, recorder
    undeclared = {(stage, name) for stage, name in recorder.writes if stage not in topo.declared.specs[name].writers}
    assert not undeclared, f"writes the catalog does not list (stage, topic): {sorted(undeclared)}"


async def put(app: Any, agent_name: str, key: str, value: bytes) -> None:
    async with app.agents[agent_name].test_context() as agent:
        await agent.put(value, key=key.encode())


def request(nid: str, key: str = "k1", **kw: Any) -> NotificationRequest:
    return NotificationRequest(
        notification_id=nid,
        client_id="c",
        idempotency_key=key,
        user_id="u1",
        channels=["sms"],
        template_id="w",
        params={"name": "Ann"},
        **kw,
    )


async def test_dedupe_route_emits_tasks_then_flags_the_duplicate(wired) -> None:
    app, topo, sent = wired
    topo.resources.templates.add(TEMPLATE)
    topo.resources.templates.ready.set()
    await put(app, "clarion.users.table", "c/u1", encode(USER))
    assert topo.resources.templates["c/w@latest"] == 1 and b"+14155550100" in topo.declared.users[b"c/u1"]

    async with app.agents["clarion.critical.dedupe_route"].test_context() as agent:
        await agent.put(encode(request("n1")), key=b"c/u1")
        await agent.put(encode(request("n2")), key=b"c/u1")
        await agent.put(b"garbage", key=b"c/u1")
    tasks = sent.on("critical.sms")
    assert [(t.delivery_id, t.address, t.template_version) for t in tasks] == [("n1.sms.0", "+14155550100", 1)]
    assert [(o.notification_id, o.status, o.planned, o.duplicate_of) for o in sent.on("outcomes")] == [
        ("n1", "accepted", 1, None),
        ("n2", "duplicate", 0, "n1"),
    ]
    [letter] = sent.on("dlq")
    assert letter.payload == "garbage" and letter.reason.startswith("undecodable")
    changelog = [(key, value) for topic, key, value, _ in sent if topic.endswith("idempotency-changelog")]
    assert [key for key, _ in changelog] == [b"c\x1fk1"], "one changelog record for the one new key"


async def test_a_batch_record_is_routed_as_one_record_per_lane(wired) -> None:
    app, topo, sent = wired
    topo.resources.templates.add(TEMPLATE)
    topo.resources.templates.ready.set()
    await put(app, "clarion.users.table", "c/u1", encode(USER))
    batch = encode_batch(encode(request(f"n{i}", key=f"k{i}")) for i in range(5))
    async with app.agents["clarion.critical.dedupe_route"].test_context() as agent:
        await agent.put(batch, key=b"c/u1")
    lane_records = [value for topic, _, value, _ in sent if topic == "critical.sms"]
    assert len(lane_records) == 1 and len(orjson.loads(lane_records[0])) == 5
    assert sorted(t.delivery_id for t in sent.on("critical.sms")) == [f"n{i}.sms.0" for i in range(5)]


async def test_one_bad_item_in_a_batch_does_not_cost_the_others(wired) -> None:
    app, topo, sent = wired
    topo.resources.templates.add(TEMPLATE)
    topo.resources.templates.ready.set()
    await put(app, "clarion.users.table", "c/u1", encode(USER))
    batch = encode_batch([encode(request("n1")), b'{"notification_id": "n-bad"}', encode(request("n2", key="k2"))])
    async with app.agents["clarion.critical.dedupe_route"].test_context() as agent:
        await agent.put(batch, key=b"c/u1")
    assert sorted(t.delivery_id for t in sent.on("critical.sms")) == ["n1.sms.0", "n2.sms.0"]
    [letter] = sent.on("dlq")
    assert letter.payload == '{"notification_id": "n-bad"}' and "client_id" in letter.reason


async def test_each_stage_folds_its_outcomes_into_the_status_table(wired) -> None:
    app, topo, sent = wired
    topo.resources.templates.add(TEMPLATE)
    topo.resources.templates.ready.set()
    await put(app, "clarion.users.table", "c/u1", encode(USER))
    async with app.agents["clarion.critical.dedupe_route"].test_context() as agent:
        await agent.put(encode(request("n1")), key=b"c/u1")
        await agent.put(encode(request("n2", key="k1")), key=b"c/u1")
    assert decode_status(topo.declared.status[b"n1"]).status == "accepted"
    assert decode_status(topo.declared.status[b"n2"]).status == "duplicate"
    [task] = sent.on("critical.sms")
    topo.resources._ledger = LocalLedger(60)
    topo.resources._clients = {"sms": Answering()}
    out = topo.emit.outbox()
    await deliver_batch(topo, [Part(0, b"u1", [task])], out)
    await topo.resources.statuses.flush()
    doc = decode_status(topo.declared.status[b"n1"])
    assert doc.status == "sent" and doc.deliveries["n1.sms.0"].provider_message_id == "pm-1"


class Answering:
    """A provider client that accepts every message."""

    channel = "sms"

    async def send(self, message: Any) -> Any:
        from clarion.providers.base import Delivered

        return Delivered("pm-1")

    async def close(self) -> None:
        pass


def task(attempt: int = 1, address: str = "+14155550100") -> DeliveryTask:
    return DeliveryTask(
        delivery_id=f"n-{uuid.uuid4().hex[:6]}.sms.0",
        notification_id="n",
        client_id="c",
        user_id="u1",
        channel="sms",
        lane="critical",
        address=address,
        template_id="w",
        template_version=1,
        params={"name": "Ann"},
        attempt=attempt,
    )


@pytest.fixture
async def delivering(wired, simulator):
    _, topo, sent = wired
    sim, url = simulator
    from dataclasses import replace

    pointed = replace(topo.declared.settings, twilio_url=url, twilio_auth_token=sim.twilio_auth_token)
    topo.declared.settings = pointed
    topo.resources._ledger = LocalLedger(60)
    topo.resources.templates.add(TEMPLATE)
    topo.resources.templates.ready.set()
    yield topo, sent, sim
    await topo.resources.close()


async def deliver(topo: Any, *tasks: DeliveryTask) -> None:
    out = topo.emit.outbox()
    await deliver_batch(topo, [Part(0, b"u1", list(tasks))], out)
    await out.flush()


async def test_deliver_sends_once_even_when_the_task_comes_back(delivering) -> None:
    topo, sent, sim = delivering
    t = task()
    await deliver(topo, t)
    await deliver(topo, t)  # a replay after a rebalance
    assert [d["body"] for d in sim.state.deliveries] == ["Hi Ann"]
    assert [o.status for o in sent.on("outcomes")] == ["sent", "sent"]


async def test_a_batch_is_claimed_sent_and_reported_together(delivering) -> None:
    topo, sent, sim = delivering
    tasks = [task(address=f"+1415555{i:04d}") for i in range(20)]
    await deliver(topo, *tasks)
    assert sorted(d["address"] for d in sim.state.deliveries) == sorted(t.address for t in tasks)
    assert len([v for name, _, v, _ in sent if name == "outcomes"]) <= topo.declared.settings.outcome_partitions
    assert sorted(o.delivery_id for o in sent.on("outcomes") if o.status == "sent") == sorted(
        t.delivery_id for t in tasks
    )


async def test_transient_failure_schedules_a_backoff_retry(delivering) -> None:
    from clarion.providers.simulator import Fault

    topo, sent, sim = delivering
    sim.state.faults.append(Fault("sms", "transient", times=1))
    before = time.time()
    await deliver(topo, task(attempt=2))
    [retry] = sent.on("critical.retry.4s")
    assert retry.attempt == 3
    assert before + 4.0 <= retry.not_before <= time.time() + 4.0  # base 2s * 2**(2-1)
    assert [o.status for o in sent.on("outcomes")] == ["retrying"]


async def test_last_attempt_goes_to_the_dlq(delivering) -> None:
    from clarion.providers.simulator import Fault

    topo, sent, sim = delivering
    sim.state.faults.append(Fault("sms", "transient"))
    await deliver(topo, task(attempt=3))
    [letter] = sent.on("dlq")
    assert letter.reason == "retries_exhausted: 503 20503 Service Unavailable" and letter.attempt == 3
    assert [o.status for o in sent.on("outcomes")] == ["dead_lettered"]
    assert not sim.state.deliveries


async def test_missing_param_fails_without_calling_the_provider(delivering) -> None:
    topo, sent, sim = delivering
    t = msgspec.structs.replace(task(), params={})
    await deliver(topo, t)
    [out] = sent.on("outcomes")
    assert out.status == "failed" and out.reason == "render_error: sms_body: 'name' is undefined"
    assert not sim.state.deliveries and not sim.state.rejected


async def test_a_long_retry_after_waits_in_its_own_delay_topic(delivering) -> None:
    from clarion.providers.simulator import Fault

    topo, sent, sim = delivering
    throttled, flaky = task(address="+14155550001"), task(address="+14155550002")
    sim.state.faults.append(Fault("sms", "throttle", throttled.address, times=1, retry_after="3600"))
    sim.state.faults.append(Fault("sms", "transient", flaky.address, times=1))
    await deliver(topo, throttled, flaky)
    [held] = sent.on("critical.retry.300s")  # capped at retry_max_delay_s, the last delay topic
    [soon] = sent.on("critical.retry.2s")
    assert (held.delivery_id, held.attempt) == (throttled.delivery_id, 2)
    assert (soon.delivery_id, soon.attempt) == (flaky.delivery_id, 2)


async def test_a_claimed_delivery_is_looked_at_again_without_spending_an_attempt(delivering) -> None:
    topo, sent, sim = delivering
    t = task(attempt=3)  # the last attempt: spending it would dead-letter the delivery
    await topo.resources.ledger.claim(t.delivery_id)  # a worker that died holding the claim
    await deliver(topo, t)
    [again] = sent.on("critical.retry.2s")
    assert again.attempt == 3 and not sent.on("dlq") and not sim.state.deliveries
    [out] = sent.on("outcomes")
    assert out.status == "retrying" and out.reason.startswith("in_flight")


async def test_a_replayed_final_attempt_asks_no_provider_and_dead_letters_once(delivering) -> None:
    from clarion.providers.simulator import Fault

    topo, sent, sim = delivering
    sim.state.faults.append(Fault("sms", "transient"))
    last = task(attempt=3)
    gone = task(address="+14155550003")
    sim.state.faults.insert(0, Fault("sms", "permanent", gone.address))
    await deliver(topo, last, gone)
    await deliver(topo, last, gone)  # both replayed after a rebalance
    assert len(sent.on("dlq")) == 1 and len(sim.state.rejected) == 2  # each provider call made once
    statuses = sorted((o.delivery_id == last.delivery_id, o.status) for o in sent.on("outcomes"))
    assert statuses == [(False, "failed"), (False, "failed"), (True, "dead_lettered"), (True, "dead_lettered")]
