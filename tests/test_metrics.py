"""GET /metrics on the API and the worker: a `metrics` key, Prometheus text, and figures that follow what happened."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import SimpleNamespace

import msgspec
import orjson
import pytest
from aiokafka import TopicPartition
from faust.types import TP
from prometheus_client.parser import text_string_to_metric_families

from clarion.providers.base import Delivered, PermanentFailure, TransientFailure
from clarion.providers.dispatch import Reply, reply_for
from clarion.providers.errors import TABLE, failure, result_class
from clarion.providers.sender import _replies
from clarion.providers.simulator import Fault
from clarion.web.scrape import ScrapeProbes
from tests.api_stack import Stack, api_stack_fixture

pytestmark = pytest.mark.asyncio(loop_scope="module")

stack = api_stack_fixture(promo_partitions=2)
PHONE = "+14155550100"  # alice's (tests/api_stack.py)
DASHBOARD = Path(__file__).parent.parent / "docker" / "grafana" / "clarion.json"


async def scrape(stack: Stack, where: str, key: str | None = "") -> tuple[int, str, str]:
    """(status, content type, body) of GET /metrics on the API or the worker."""
    base = stack.url if where == "api" else f"http://127.0.0.1:{stack.settings.web_port}"
    async with stack.http.get(base + "/metrics", headers=stack.auth(stack.key if key == "" else key)) as resp:
        return resp.status, resp.headers.get("Content-Type", ""), await resp.text()


class Scrape:
    """One scrape, parsed with prometheus_client's own parser."""

    def __init__(self, text: str) -> None:
        self.samples = [s for family in text_string_to_metric_families(text) for s in family.samples]

    def value(self, name: str, **labels: str) -> float:
        """The sample `name` with exactly these labels (0 when absent: a counter not yet counted)."""
        found = [s.value for s in self.samples if s.name == name and s.labels == labels]
        assert len(found) <= 1, (name, labels, found)
        return found[0] if found else 0.0

    def labelled(self, name: str) -> list[dict[str, str]]:
        return [s.labels for s in self.samples if s.name == name]


async def scraped(stack: Stack, where: str) -> Scrape:
    status, _, text = await scrape(stack, where)
    assert status == 200, text
    return Scrape(text)


async def eventually(check: Callable[[], Awaitable[bool]], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        assert time.monotonic() < deadline, "never happened"
        await asyncio.sleep(0.3)


@pytest.mark.parametrize("where", ["api", "worker"])
async def test_metrics_need_a_key_with_the_metrics_scope(stack: Stack, where: str) -> None:
    assert (await scrape(stack, where, key=None))[0] == 401
    assert (await scrape(stack, where, key="clk_0123456789abcdef_" + "x" * 43))[0] == 401
    reader = await stack.new_key("web", ["read", "send", "users", "templates"])  # every tenant scope: not enough
    assert (await scrape(stack, where, key=reader))[0] == 403
    scraper = await stack.new_key("ops", ["metrics"])
    status, content_type, text = await scrape(stack, where, key=scraper)
    assert status == 200 and content_type.startswith("text/plain; version=0.0.4")
    assert Scrape(text).labelled("process_cpu_seconds_total") == [{}]


async def test_a_delivery_counts_its_outcome_and_its_provider_call(stack: Stack) -> None:
    worker_before, api_before = await scraped(stack, "worker"), await scraped(stack, "api")
    status, body = await stack.call("POST", "/notif", stack.notif())
    assert status == 202
    await stack.wait_status(body["notification_id"], {"sent"})
    after = await scraped(stack, "worker")

    sent = {"lane": "critical", "channel": "email", "outcome": "sent"}
    assert after.value("clarion_notifications_total", **sent) == worker_before.value(
        "clarion_notifications_total", **sent) + 1  # fmt: skip
    accepted = {"lane": "critical", "channel": "none", "outcome": "accepted"}
    assert after.value("clarion_notifications_total", **accepted) > worker_before.value(
        "clarion_notifications_total", **accepted)  # fmt: skip
    ses = {"provider": "ses", "account": "primary"}
    assert after.value("clarion_provider_call_seconds_count", **ses) == worker_before.value(
        "clarion_provider_call_seconds_count", **ses) + 1  # fmt: skip
    assert after.value("clarion_provider_call_seconds_sum", **ses) > worker_before.value(
        "clarion_provider_call_seconds_sum", **ses)  # fmt: skip
    assert after.value("clarion_provider_call_seconds_bucket", le="+Inf", **ses) == after.value(
        "clarion_provider_call_seconds_count", **ses)  # fmt: skip
    assert after.value("clarion_provider_calls_total", result="ok", **ses) == worker_before.value(
        "clarion_provider_calls_total", result="ok", **ses) + 1  # fmt: skip

    api = await scraped(stack, "api")
    posted = {"method": "POST", "route": "/notif", "status": "202"}
    assert api.value("clarion_api_requests_total", **posted) == api_before.value(
        "clarion_api_requests_total", **posted) + 1  # fmt: skip
    assert api.value("clarion_api_request_seconds_count", method="POST", route="/notif") >= 1
    # GET /notif/{id} is counted by its route template, never by the id it asked for
    routes = {labels["route"] for labels in api.labelled("clarion_api_requests_total")}
    assert "/notif/{notification_id}" in routes and not any(body["notification_id"] in r for r in routes)


async def test_retries_rate_limits_and_dead_letters_are_counted(stack: Stack) -> None:
    before = await scraped(stack, "worker")
    stack.sim.state.faults.append(Fault("sms", "throttle", PHONE, times=1, retry_after="0"))
    status, body = await stack.call("POST", "/notif", stack.notif(channels=["sms"]))
    assert status == 202
    await stack.wait_status(body["notification_id"], {"sent"})
    stack.sim.state.faults.append(Fault("sms", "transient", PHONE, times=3))  # max_attempts=3: dead-lettered
    status, body = await stack.call("POST", "/notif", stack.notif(channels=["sms"]))
    await stack.wait_status(body["notification_id"], {"dead_lettered"})
    after = await scraped(stack, "worker")

    def grew(name: str, **labels: str) -> float:
        return after.value(name, **labels) - before.value(name, **labels)

    sms = {"lane": "critical", "channel": "sms"}
    assert grew("clarion_notifications_total", outcome="retrying", **sms) == 3  # 1 throttled + 2 transient
    assert grew("clarion_notifications_total", outcome="sent", **sms) == 1
    assert grew("clarion_notifications_total", outcome="dead_lettered", **sms) == 1
    twilio = {"provider": "twilio", "account": "primary"}
    assert grew("clarion_provider_calls_total", result="rate_limited", **twilio) == 1
    assert grew("clarion_provider_calls_total", result="transient", **twilio) == 3
    assert grew("clarion_provider_calls_total", result="ok", **twilio) == 1
    assert grew("clarion_provider_call_seconds_count", **twilio) == 5
    prefix = stack.settings.topic_prefix
    assert grew("clarion_dead_letters_total", source_topic=f"{prefix}.critical.sms") == 1
    tiers = [labels["stage"] for labels in after.labelled("clarion_stage_items_total") if ".retry." in labels["stage"]]
    retried = sum(grew("clarion_stage_items_total", stage=stage) for stage in tiers)
    assert retried == 3


async def test_lag_table_sizes_and_campaigns(stack: Stack) -> None:
    for _ in range(2):  # statuses of this test's own (tests of a module may run in any order under xdist)
        status, body = await stack.call("POST", "/notif", stack.notif())
        assert status == 202, body
        await stack.wait_status(body["notification_id"], {"sent"})
    campaign = {"campaign_id": "metrics", "template_id": "otp", "channels": ["email"],
                "audience": {"user_ids": ["alice"]}, "params": {"code": "7"}}  # fmt: skip
    assert (await stack.call("POST", "/promo", campaign))[0] == 202
    prefix = stack.settings.topic_prefix
    last: list[Scrape] = []

    async def settled() -> bool:  # the campaign done, and everything consumed committed (probes: 5 s cache)
        last[:] = [await scraped(stack, "worker")]
        lag = {labels["topic"] for labels in last[0].labelled("clarion_consumer_lag")}
        return (
            last[0].value("clarion_campaigns", state="done") == 1
            and {f"{prefix}.critical.requests", f"{prefix}.critical.email", f"{prefix}.promo.jobs"} <= lag
            and all(last[0].value("clarion_consumer_lag", topic=topic) == 0 for topic in lag)
            and last[0].value("clarion_table_keys", table="status") >= 2  # the two above
        )

    await eventually(settled, timeout_s=60)
    now = last[0]
    assert now.value("clarion_notifications_total", lane="promo", channel="email", outcome="sent") == 1
    assert now.value("clarion_table_keys", table="users") >= 1  # alice
    assert now.value("clarion_table_keys", table="status") >= 2  # the two notifications above
    assert now.value("clarion_table_keys", table="campaigns") >= 1
    assert now.value("clarion_metrics_probe_age_seconds") < 10


async def test_the_grafana_dashboard_asks_only_for_metrics_that_exist(stack: Stack) -> None:
    families: set[str] = set()
    for where in ("api", "worker"):
        families |= {family.name for family in text_string_to_metric_families((await scrape(stack, where))[2])}
    dashboard = orjson.loads(DASHBOARD.read_bytes())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    used = {re.sub(r"_(total|bucket|count|sum)$", "", name)
            for expr in exprs for name in re.findall(r"\b(?:clarion|process)_[a-z_]+", expr)}  # fmt: skip
    assert len(used) >= 12 and used <= families, used - families


async def test_replies_from_an_older_sender_still_decode() -> None:
    old_frame = msgspec.msgpack.encode((7, [("sent", "msg-1", "", None)]))  # a Reply before the call fields
    batch_id, (reply,) = _replies.decode(old_frame)
    assert batch_id == 7 and reply == Reply("sent", "msg-1")
    assert (reply.call_s, reply.account, reply.result_class) == (0.0, "", "")  # no call: not observed


async def test_result_classes() -> None:
    throttled = failure(TABLE[("twilio", "20429")], "429 20429", {"Retry-After": "1"})
    assert isinstance(throttled, TransientFailure) and result_class(throttled) == "rate_limited"
    assert result_class(failure(TABLE[("fcm", "UNAVAILABLE")], "503", {})) == "transient"
    assert result_class(TransientFailure("timeout")) == "timeout"
    assert result_class(TransientFailure("connection: ClientConnectorError")) == "connection"
    assert result_class(PermanentFailure("400 21211")) == "permanent"
    reply = reply_for(Delivered("m1"), 0.25, "email/fallback")
    assert (reply.kind, reply.call_s, reply.account, reply.result_class) == ("sent", 0.25, "email/fallback", "ok")


class FakeOffsets:
    """BrokerOffsets' answers, counted; `fail` makes the broker away."""

    def __init__(self, ends: dict[TopicPartition, int], committed: dict[TopicPartition, int]) -> None:
        self.ends, self.commits, self.asked, self.fail = ends, committed, 0, False

    async def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        self.asked += 1
        if self.fail:
            raise ConnectionError("broker away")
        return {tp: self.ends[tp] for tp in tps}

    async def committed(self, group: str, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        assert group == "grp"
        return {tp: self.commits[tp] for tp in tps if tp in self.commits}


async def test_lag_is_end_minus_committed_over_the_held_partitions_of_clarion_topics() -> None:
    req0, req1, email = TopicPartition("p.req", 0), TopicPartition("p.req", 1), TopicPartition("p.email", 3)
    offsets = FakeOffsets({req0: 10, req1: 5, email: 4}, {req0: 7, email: 4})  # req1: nothing committed yet
    held = {TP("p.req", 0), TP("p.req", 1), TP("p.email", 3), TP("grp-status-changelog", 0)}  # a changelog: not lag
    app = SimpleNamespace(assignor=SimpleNamespace(assigned_actives=lambda: held), conf=SimpleNamespace(id="grp"))
    specs = {"critical.requests": SimpleNamespace(topic="p.req"), "critical.email": SimpleNamespace(topic="p.email")}
    topo = SimpleNamespace(
        declared=SimpleNamespace(app=app, specs=specs), resources=SimpleNamespace(offsets=offsets, jobs=None)
    )
    probes = ScrapeProbes(topo, ttl_s=60)  # type: ignore[arg-type]
    await probes.refresh()
    assert probes.lag == {"p.req": 3 + 5, "p.email": 0}
    await probes.refresh()
    assert offsets.asked == 1  # within the ttl: from the cache
    probes.ttl_s, offsets.fail = 0, True
    await probes.refresh()
    assert offsets.asked == 2 and probes.lag == {"p.req": 8, "p.email": 0}  # the broker is away: the last figures
