"""A request never fails `unknown_user` for a user whose upsert was acknowledged before it.

users and critical.requests are separate topics, so a worker can see a request before
the user it names: at start (both topics full, nothing folded yet) and in steady state
(an upsert and a request posted back to back). tables/users_progress.py closes both.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from clarion.keys import create_key
from clarion.tables.api_keys import SCOPES
from clarion.topology.worker import WorkerProcess
from clarion.web.api import create_api
from tests.conftest import test_settings
from tests.replay_harness import Replayer, Scenario, canonical, normalize

TEMPLATE = {"template_id": "w", "version": 1, "sms_body": "Hi {{ name }}"}


def user(i: int) -> dict[str, Any]:
    return {"user_id": f"user-{i}", "phone": f"+1415555{i:04d}"}


def notification(i: int) -> dict[str, Any]:
    return {
        "idempotency_key": f"k-{i}",
        "user_id": f"user-{i}",
        "channels": ["sms"],
        "template_id": "w",
        "params": {"name": "Ann"},
    }


async def test_a_starting_worker_folds_the_users_topic_before_routing(
    broker, redis_server, simulator, tmp_path: Path
) -> None:
    sim, sim_url = simulator
    settings = test_settings(broker, redis_server.url, sim_url, tmp_path, critical_partitions=4)
    replayer = Replayer(settings, sim)
    await replayer.prepare()
    n = 300
    steps: list[dict[str, Any]] = [{"input": "templates", "key": "c/w@1", "value": {**TEMPLATE, "client_id": "c"}}]
    for i in range(n):  # each user immediately followed by a request for it, before any worker runs
        steps.append({"input": "users", "key": f"c/user-{i}", "value": {**user(i), "client_id": "c"}})
        steps.append(
            {
                "input": "critical.requests",
                "key": f"c/user-{i}",
                "value": {"notification_id": f"n-{i}", "client_id": "c", **notification(i)},
            }
        )
    scenario = Scenario(steps=steps)
    for i in range(n):
        ids = {"notification_id": f"n-{i}", "client_id": "c", "user_id": f"user-{i}"}
        scenario.expected["outcomes"].append(normalize("outcomes", {**ids, "status": "accepted", "planned": 1}))
        sent = {**ids, "status": "sent", "channel": "sms", "delivery_id": f"n-{i}.sms.0", "attempt": 1}
        scenario.expected["outcomes"].append(normalize("outcomes", sent))
    got = await replayer.through_worker(scenario, tmp_path / "worker.log", feed_first=True)
    failed = [o for o in got["outcomes"] if o["status"] == "failed"]
    assert not failed, f"{len(failed)} failed, e.g. {failed[:2]}"
    assert canonical(got["outcomes"]) == canonical(scenario.expected["outcomes"])


async def test_an_upsert_and_a_request_posted_back_to_back(broker, redis_server, simulator, tmp_path: Path) -> None:
    sim, sim_url = simulator
    settings = test_settings(broker, redis_server.url, sim_url, tmp_path, critical_partitions=4)
    api = web.AppRunner(create_api(settings), access_log=None)
    await api.setup()
    await web.TCPSite(api, "127.0.0.1", settings.api_port).start()
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    url = f"http://127.0.0.1:{settings.api_port}"
    key, _ = await create_key(settings, "c", list(SCOPES))
    try:
        await worker.wait_ready()
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {key}"}) as http:
            async with http.post(f"{url}/template", json=TEMPLATE) as resp:
                assert resp.status == 201

            async def upsert_then_notify(i: int) -> str:
                async with http.post(f"{url}/users", json=user(i)) as resp:
                    assert resp.status == 202
                async with http.post(f"{url}/notif", json=notification(i)) as resp:
                    assert resp.status == 202
                    return (await resp.json())["notification_id"]

            nids = await asyncio.gather(*(upsert_then_notify(i) for i in range(150)))
            statuses: dict[str, str] = {}
            deadline = time.monotonic() + 60
            while len(statuses) < len(nids) and time.monotonic() < deadline:
                for nid in nids:
                    if nid in statuses:
                        continue
                    async with http.get(f"{url}/notif/{nid}") as resp:
                        doc = await resp.json()
                        if resp.status == 200 and doc["status"] != "accepted":
                            statuses[nid] = doc["status"] if doc["status"] == "sent" else f"{doc['status']} {doc}"
                await asyncio.sleep(0.2)
    finally:
        worker.stop()
        await api.cleanup()
    assert sorted(statuses.values()) == ["sent"] * len(nids), [s for s in statuses.values() if s != "sent"][:3]
    assert len(sim.state.deliveries) == len(nids)
