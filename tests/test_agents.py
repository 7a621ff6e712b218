"""Agents in faust's in-memory test context: no broker, sends recorded."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from clarion.agents.deliver import deliver
from clarion.schemas import DeliveryTask, NotificationRequest, TemplateVersion, UserProfile, encode
from clarion.tables.ledger import LocalLedger
from clarion.topology.app import create_app
from clarion.topology.settings import Settings

TEMPLATE = TemplateVersion(template_id="w", version=1, sms_body="Hi {{ name }}")


class Recorder(list):
    async def __call__(self, name: str, key: str, record: Any) -> None:
        self.append((name, key, record))

    def on(self, name: str) -> list[Any]:
        return [record for topic, _, record in self if topic == name]


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
    recorder = Recorder()
    topo.send = recorder
    yield app, topo, recorder


async def put(app: Any, agent_name: str, key: str, record: Any) -> None:
    async with app.agents[agent_name].test_context() as agent:
        await agent.put(encode(record), key=key.encode())


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
    topo.templates.add(TEMPLATE)
    topo.templates.ready.set()
    await put(app, "clarion.users.table", "u1", UserProfile(user_id="u1", phone="+14155550100"))
    assert topo.templates["w@latest"] == 1 and topo.users["u1"]["phone"] == "+14155550100"

    async with app.agents["clarion.critical.dedupe_route"].test_context() as agent:
        await agent.put(encode(request("n1")), key=b"u1")
        await agent.put(encode(request("n2")), key=b"u1")
        await agent.put(b"garbage", key=b"u1")
    tasks = sent.on("critical.sms")
    assert [(t.delivery_id, t.address, t.template_version) for t in tasks] == [("n1.sms.0", "+14155550100", 1)]
    assert [(o.notification_id, o.status, o.planned, o.duplicate_of) for o in sent.on("outcomes")] == [
        ("n1", "accepted", 1, None),
        ("n2", "duplicate", 0, "n1"),
    ]
    [letter] = sent.on("dlq")
    assert letter.payload == "garbage" and letter.reason.startswith("undecodable")


async def test_outcomes_agent_folds_status(wired) -> None:
    from clarion.schemas import Outcome

    app, topo, _ = wired
    async with app.agents["clarion.outcomes.status"].test_context() as agent:
        await agent.put(encode(Outcome(notification_id="n1", status="accepted", planned=1)), key=b"n1")
        await agent.put(encode(Outcome(notification_id="n1", status="sent", delivery_id="d", attempt=1)), key=b"n1")
    assert topo.status["n1"]["status"] == "sent"


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

    topo.settings = replace(topo.settings, twilio_url=url, twilio_auth_token="t")
    topo._ledger = LocalLedger(60)
    topo.templates.add(TEMPLATE)
    topo.templates.ready.set()
    yield topo, sent, sim
    await topo.close()


async def test_deliver_sends_once_even_when_the_task_comes_back(delivering) -> None:
    topo, sent, sim = delivering
    t = task()
    await deliver(topo, t)
    await deliver(topo, t)  # a replay after a rebalance
    assert [d["body"] for d in sim.state.deliveries] == ["Hi Ann"]
    assert [o.status for o in sent.on("outcomes")] == ["sent", "sent"]


async def test_transient_failure_schedules_a_backoff_retry(delivering) -> None:
    from clarion.providers.simulator import Fault

    topo, sent, sim = delivering
    sim.state.faults.append(Fault("sms", "transient", times=1))
    before = time.time()
    await deliver(topo, task(attempt=2))
    [retry] = sent.on("retry.2")
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
    t = task().derive(params={})
    await deliver(topo, t)
    [out] = sent.on("outcomes")
    assert out.status == "failed" and out.reason == "render_error: sms_body: 'name' is undefined"
    assert not sim.state.deliveries and not sim.state.rejected
