"""Campaigns end to end on the embedded broker: POST /promo -> jobs -> fanout -> promo lanes -> simulator.

Each test uses its own client (its own users, templates and campaigns), so the frequency
cap one test exercises never touches another's users.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from clarion.schemas.records import scoped
from clarion.topology.catalog import catalog
from tests.api_stack import Stack, api_stack_fixture
from tests.drain import drained

pytestmark = pytest.mark.asyncio(loop_scope="module")
stack = api_stack_fixture(promo_partitions=2, promo_tick_s=0.05, promo_frequency_cap="1/3600")

SALE = {
    "template_id": "sale",
    "version": 1,
    "email_subject": "Sale for {{ user.user_id }}",
    "email_text": "{{ pct }}% off",
    "push_title": "Sale",
    "push_body": "{{ pct }}% off",
    "sms_body": "{{ pct }}% off",
}


class Client:
    """One tenant of the stack: its key, and calls made with it."""

    def __init__(self, stack: Stack, client_id: str, key: str) -> None:
        self.stack, self.client_id, self.key = stack, client_id, key

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        return await self.stack.call(method, path, body, key=self.key)

    async def load_users(self, users: list[dict[str, Any]]) -> None:
        """Produce profiles straight to the users topic, many per produce request."""
        topic = catalog(self.stack.settings)["users"].topic
        producer = AIOKafkaProducer(bootstrap_servers=self.stack.settings.bootstrap_servers, linger_ms=5)
        await producer.start()
        try:
            sends = []
            for user in users:
                key = scoped(self.client_id, user["user_id"]).encode()
                value = orjson.dumps({"client_id": self.client_id, **user})
                sends.append(await producer.send(topic, value, key=key))
            await asyncio.gather(*sends)
        finally:
            await producer.stop()

    async def campaign(self, campaign_id: str, states: set[str], timeout_s: float = 90) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        body: Any = None
        while time.monotonic() < deadline:
            status, body = await self.call("GET", f"/promo/{campaign_id}")
            if status == 200 and body["state"] in states:
                return body
            await asyncio.sleep(0.1)
        raise AssertionError(f"campaign {campaign_id} never reached {states}: {body}")


async def tenant(stack: Stack, client_id: str) -> Client:
    client = Client(stack, client_id, await stack.new_key(client_id))
    assert (await client.call("POST", "/template", SALE))[0] == 201
    return client


def received(stack: Stack, since: int, domain: str) -> Counter[tuple[str, str]]:
    """(channel, address) -> deliveries since `since`, for addresses of one test's users."""
    return Counter((r["channel"], r["address"]) for r in stack.sim.state.deliveries[since:] if domain in r["address"])


def promo(campaign_id: str, **kw: Any) -> dict[str, Any]:
    return {"campaign_id": campaign_id, "template_id": "sale", "channels": ["email"], "audience": {"all": True},
            "params": {"pct": 20}, **kw}  # fmt: skip


async def test_campaign_reaches_each_user_once_on_their_first_channel(stack: Stack) -> None:
    c = await tenant(stack, "first")
    users = [{"user_id": f"p{i}", "email": f"p{i}@first.example"} for i in range(200)]
    users += [{"user_id": f"q{i}", "phone": f"+1415555{i:04d}"} for i in range(50)]  # no email: SMS
    users += [{"user_id": f"o{i}", "email": f"o{i}@first.example", "promo_opt_out": True} for i in range(10)]
    users += [{"user_id": f"n{i}", "email": f"n{i}@first.example", "channel_opt_out": ["email"]} for i in range(5)]
    await c.load_users(users)
    before = len(stack.sim.state.deliveries)
    status, body = await c.call("POST", "/promo", promo("spring", channels=["email", "sms"]))
    assert status == 202, body
    done = await c.campaign("spring", {"done"})
    got = received(stack, before, "first.example") + received(stack, before, "+1415555")
    assert len(got) == 250 and max(got.values()) == 1
    assert sum(1 for ch, _ in got if ch == "sms") == 50
    counters = done["counters"]
    assert counters["sent"] == 250 and counters["executions"] == 250
    assert counters["skipped"] == {"opted_out": 10, "no_address": 5}  # n*: no SMS number to fall back to
    assert counters["targeted"] == 265 and counters["expanded"] == 250
    again = await c.call("POST", "/promo", promo("spring", channels=["sms"]))  # the id is idempotent
    assert again[0] == 202
    await drained(stack.settings)  # the repeated command handled
    assert (await c.campaign("spring", {"done"}))["counters"] == counters


async def test_ten_thousand_users_each_get_it_exactly_once(stack: Stack) -> None:
    c = await tenant(stack, "big")
    await c.load_users([{"user_id": f"u{i}", "email": f"u{i}@big.example"} for i in range(10_000)])
    before = len(stack.sim.state.deliveries)
    assert (await c.call("POST", "/promo", promo("tenk")))[0] == 202
    done = await c.campaign("tenk", {"done"}, timeout_s=180)
    got = received(stack, before, "big.example")
    assert len(got) == 10_000 and set(got.values()) == {1}
    assert done["counters"]["sent"] == 10_000 and done["counters"]["partitions_expanded"] == 2


async def test_audience_predicate_and_frequency_cap(stack: Stack) -> None:
    c = await tenant(stack, "cap")
    users = [{"user_id": f"v{i}", "email": f"v{i}@cap.example", "tags": ["vip"] if i % 2 else [],
              "attributes": {"age": 20 + i}} for i in range(40)]  # fmt: skip
    await c.load_users(users)
    before = len(stack.sim.state.deliveries)
    where = {"where": '"vip" in tags and attributes.age >= 30'}
    assert (await c.call("POST", "/promo", promo("vips", audience=where)))[0] == 202
    first = await c.campaign("vips", {"done"})
    chosen = {f"v{i}@cap.example" for i in range(40) if i % 2 and 20 + i >= 30}
    assert {address for _, address in received(stack, before, "cap.example")} == chosen
    assert first["counters"]["targeted"] == len(chosen) == first["counters"]["sent"]
    # the cap is 1 campaign per user per hour: a second one reaches only those the first did not
    mark = len(stack.sim.state.deliveries)
    assert (await c.call("POST", "/promo", promo("everyone")))[0] == 202
    second = await c.campaign("everyone", {"done"})
    assert {address for _, address in received(stack, mark, "cap.example")} == {
        f"v{i}@cap.example" for i in range(40)
    } - chosen
    assert second["counters"]["skipped"] == {"frequency_cap": len(chosen)}


async def test_quiet_hours_defer_without_dropping(stack: Stack) -> None:
    c = await tenant(stack, "quiet")
    now = time.gmtime()
    start = f"{(now.tm_hour - 1) % 24:02d}:00"  # a window around the current UTC time
    end = f"{(now.tm_hour + 2) % 24:02d}:00"
    users = [{"user_id": "awake", "email": "awake@quiet.example"},
             {"user_id": "asleep", "email": "asleep@quiet.example", "timezone": "UTC",
              "quiet_hours": {"start": start, "end": end}}]  # fmt: skip
    await c.load_users(users)
    before = len(stack.sim.state.deliveries)
    assert (await c.call("POST", "/promo", promo("night")))[0] == 202
    body = await c.campaign("night", {"sending"})
    deadline = time.monotonic() + 20
    while not received(stack, before, "awake@quiet") and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    await asyncio.sleep(1.0)
    body = await c.campaign("night", {"sending"})  # not done: one execution waits for the morning
    assert set(received(stack, before, "quiet.example")) == {("email", "awake@quiet.example")}
    assert body["counters"]["deferred"] == 1 and body["counters"]["executions"] == 2
    assert body["counters"]["sent"] == 1 and body["counters"]["skipped"] == {}


async def test_scheduled_campaign_starts_on_time(stack: Stack) -> None:
    c = await tenant(stack, "later")
    await c.load_users([{"user_id": "w", "email": "w@later.example"}])
    send_at = time.time() + 3
    before = len(stack.sim.state.deliveries)
    assert (await c.call("POST", "/promo", promo("soon", send_at=send_at)))[0] == 202
    await c.campaign("soon", {"scheduled"}, timeout_s=2.5)  # folded by its owner, not started yet
    done = await c.campaign("soon", {"done"}, timeout_s=30)
    assert 0 <= done["started_at"] - send_at < 1.0
    got = [r for r in stack.sim.state.deliveries[before:] if r["address"] == "w@later.example"]
    assert len(got) == 1 and got[0]["at"] >= send_at


async def test_pause_resume_and_cancel(stack: Stack) -> None:
    c = await tenant(stack, "ctl")
    await c.load_users([{"user_id": f"x{i}", "email": f"x{i}@ctl.example"} for i in range(300)])
    before = len(stack.sim.state.deliveries)
    assert (await c.call("POST", "/promo", promo("slow", pacing_per_s=60)))[0] == 202
    await c.campaign("slow", {"expanding", "sending"})
    while len(received(stack, before, "ctl.example")) < 30:
        await asyncio.sleep(0.05)
    assert (await c.call("POST", "/promo/slow/pause"))[0] == 202
    await c.campaign("slow", {"paused"})
    await asyncio.sleep(1.0)  # what was already on its way has arrived by now
    held = len(received(stack, before, "ctl.example"))
    await asyncio.sleep(2.0)
    assert len(received(stack, before, "ctl.example")) == held < 300  # nothing while paused
    assert (await c.call("POST", "/promo/slow/resume"))[0] == 202
    done = await c.campaign("slow", {"done"}, timeout_s=60)
    got = received(stack, before, "ctl.example")
    assert len(got) == 300 and set(got.values()) == {1} and done["counters"]["sent"] == 300

    mark = len(stack.sim.state.deliveries)
    assert (await c.call("POST", "/promo", promo("stopped", pacing_per_s=60)))[0] == 202
    await c.campaign("stopped", {"expanding", "sending"})
    await asyncio.sleep(1.0)
    assert (await c.call("POST", "/promo/stopped/cancel"))[0] == 202
    cancelled = await c.campaign("stopped", {"cancelled"})
    await asyncio.sleep(1.5)
    sent = len(received(stack, mark, "ctl.example"))
    await asyncio.sleep(1.5)
    assert len(received(stack, mark, "ctl.example")) == sent < 300
    assert cancelled["finished_at"] is not None
    assert (await c.call("POST", "/promo/stopped/resume"))[0] == 202  # accepted, but a cancelled job stays so
    await asyncio.sleep(0.5)
    assert (await c.call("GET", "/promo/stopped"))[1]["state"] == "cancelled"


async def test_promo_api_refuses_bad_campaigns(stack: Stack) -> None:
    c = await tenant(stack, "bad")
    cases = [
        (promo("x", channels=[]), 400, "channels"),
        (promo("x", audience={"all": True, "where": "a"}), 400, "audience"),
        (promo("x", audience={"where": "attributes.age >="}), 422, "audience.where"),
        (promo("x", window={"start": "25:00", "end": "08:00"}), 400, "window.start"),
        (promo("x", send_at="tomorrow"), 400, "send_at"),
        (promo("x", pacing_per_s=-1), 400, "pacing_per_s"),
        (promo("x", template_id="nope"), 404, "template_id"),
        (promo("../x"), 400, "campaign_id"),
        (promo("x", params={"user": 1}), 400, "params"),
    ]
    for body, status, field in cases:
        got = await c.call("POST", "/promo", body)
        assert got[0] == status, (body, got)
        assert field in [e["field"] for e in got[1]["errors"]], got
    assert (await c.call("GET", "/promo/never"))[0] == 404
    assert (await c.call("POST", "/promo/never/pause"))[0] == 404
    assert (await c.call("POST", "/promo/x/explode"))[0] == 404
    assert (await stack.call("GET", "/promo/x", key=None))[0] == 401
    other = await tenant(stack, "other")
    assert (await c.call("POST", "/promo", promo("mine")))[0] == 202
    await c.campaign("mine", {"done", "sending", "expanding"})
    assert (await other.call("GET", "/promo/mine"))[0] == 404  # another client's campaign is unknown
