"""The faust CLI on clarion's app: `agents` describes the graph, `send` reaches a topic and an agent."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer

from clarion.schemas.codec import decode_batch
from clarion.schemas.records import NotificationRequest, UserProfile
from clarion.topology.admin import ensure_topics
from clarion.topology.catalog import catalog
from clarion.topology.worker import settings_env
from tests.conftest import test_settings


def faust(settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **settings_env(settings)}
    return subprocess.run([sys.executable, "-m", "faust", "-A", "clarion.app", *args], env=env,
                          capture_output=True, text=True, timeout=90)  # fmt: skip


async def read_all(bootstrap: str, topic: str, expect: int) -> list[bytes]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None)
    await consumer.start()
    values: list[bytes] = []
    try:
        async with asyncio.timeout(30):
            while len(values) < expect:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    values.extend(r.value for r in records)
    finally:
        await consumer.stop()
    return values


async def test_faust_agents_lists_every_agent_with_its_description(broker, tmp_path: Path) -> None:
    settings = test_settings(broker, "", "http://127.0.0.1:1", tmp_path)
    done = await asyncio.to_thread(faust, settings, "agents")
    assert done.returncode == 0, done.stderr
    assert "@clarion.critical.dedupe_route" in done.stdout and "<N/A>" not in done.stdout


async def test_faust_send_reaches_a_topic_and_an_agent(broker, tmp_path: Path) -> None:
    settings = test_settings(broker, "", "http://127.0.0.1:1", tmp_path)
    specs = catalog(settings)
    await ensure_topics(settings.bootstrap_servers, list(specs.values()))
    user = {"client_id": "c", "user_id": "u1", "email": "u1@example.com"}
    request = {"notification_id": "n0_1", "client_id": "c", "user_id": "u1", "idempotency_key": "k1",
               "template_id": "welcome", "channels": ["email"]}  # fmt: skip

    to_topic = await asyncio.to_thread(
        faust, settings, "send", specs["users"].topic, orjson.dumps(user).decode(), "--key", "c/u1"
    )
    assert to_topic.returncode == 0, to_topic.stderr
    to_agent = await asyncio.to_thread(
        faust, settings, "send", "@clarion.app.critical_dedupe_route", orjson.dumps(request).decode(), "--key", "c/u1"
    )
    assert to_agent.returncode == 0, to_agent.stderr

    [profile] = await read_all(settings.bootstrap_servers, specs["users"].topic, 1)
    assert decode_batch(UserProfile, profile)[0][0].email == "u1@example.com"
    [sent] = await read_all(settings.bootstrap_servers, specs["critical.requests"].topic, 1)
    assert decode_batch(NotificationRequest, sent)[0][0].idempotency_key == "k1"
