"""Campaigns end to end on the embedded broker: POST /promo -> jobs -> fanout -> promo lanes -> simulator."""

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
from tests.api_stack import CLIENT, Stack, api_stack_fixture

pytestmark = pytest.mark.asyncio(loop_scope="module")
stack = api_stack_fixture(promo_partitions=2, promo_tick_s=0.05)

PROMO_TEMPLATE = {
    "template_id": "sale",
    "version": 1,
    "email_subject": "Sale for {{ user.user_id }}",
    "email_text": "{{ pct }}% off",
    "push_title": "Sale",
    "push_body": "{{ pct }}% off",
    "sms_body": "{{ pct }}% off",
}


async def load_users(stack: Stack, users: list[dict[str, Any]]) -> None:
    """Produce user profiles straight to the users topic, many per produce request."""
    topic = catalog(stack.settings)["users"].topic
    producer = AIOKafkaProducer(bootstrap_servers=stack.settings.bootstrap_servers, linger_ms=5)
    await producer.start()
    try:
        futures = []
        for user in users:
            value = {"client_id": CLIENT, **user}
            key = scoped(CLIENT, user["user_id"]).encode()
            futures.append(await producer.send(topic, orjson.dumps(value), key=key))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def wait_campaign(stack: Stack, campaign_id: str, states: set[str], timeout_s: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    body: Any = None
    while time.monotonic() < deadline:
        status, body = await stack.call("GET", f"/promo/{campaign_id}")
        if status == 200 and body["state"] in states:
            return body
        await asyncio.sleep(0.2)
    raise AssertionError(f"campaign {campaign_id} never reached {states}: {body}")


async def test_campaign_reaches_each_user_once_on_their_first_channel(stack: Stack) -> None:
    assert (await stack.call("POST", "/template", PROMO_TEMPLATE))[0] == 201
    users = [{"user_id": f"p{i}", "email": f"p{i}@example.com"} for i in range(200)]
    users += [{"user_id": f"q{i}", "phone": f"+1415555{i:04d}"} for i in range(50)]  # no email: gets SMS
    users += [{"user_id": f"o{i}", "email": f"o{i}@example.com", "promo_opt_out": True} for i in range(10)]
    await load_users(stack, users)
    before = len(stack.sim.state.deliveries)
    status, body = await stack.call("POST", "/promo", {
        "campaign_id": "spring", "template_id": "sale", "channels": ["email", "sms"],
        "audience": {"all": True}, "params": {"pct": 20},
    })  # fmt: skip
    assert status == 202, body
    done = await wait_campaign(stack, "spring", {"done"})
    got = Counter((r["channel"], r["address"]) for r in stack.sim.state.deliveries[before:])
    assert max(got.values()) == 1
    assert len(got) == 251  # and alice, the stack's user, by email
    assert sum(1 for ch, _ in got if ch == "sms") == 50
    counters = done["counters"]
    assert counters["sent"] == 251 and counters["executions"] == 251
    assert counters["skipped"] == {"opted_out": 10}
    assert counters["targeted"] == 261
