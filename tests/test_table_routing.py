"""Two workers: GET /notif/{id} asked of one is answered by the owner of the key."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from pathlib import Path

import aiohttp
from aiohttp import web

from clarion.keys import create_key
from clarion.tables.api_keys import SCOPES
from clarion.topology.embedded import free_port
from clarion.topology.worker import WorkerProcess
from clarion.web.api import create_api
from tests.conftest import test_settings
from tests.drain import drained


async def partitions_of(http: aiohttp.ClientSession, worker: WorkerProcess) -> int:
    try:
        async with http.get(worker.url + "/ready") as resp:
            return (await resp.json())["partitions"] if resp.status == 200 else 0
    except aiohttp.ClientConnectionError:
        return 0  # not listening yet


async def test_status_is_routed_to_the_worker_that_owns_it(broker, redis_server, simulator, tmp_path: Path) -> None:
    sim, sim_url = simulator
    settings = test_settings(broker, redis_server.url, sim_url, tmp_path, critical_partitions=4, outcome_partitions=4)
    other = replace(settings, web_port=free_port(), data_dir=str(tmp_path / "data-b"))
    api = web.AppRunner(create_api(settings), access_log=None)  # asks worker A for status
    await api.setup()
    await web.TCPSite(api, "127.0.0.1", settings.api_port).start()
    workers = [WorkerProcess(settings, tmp_path / "a.log").start(), WorkerProcess(other, tmp_path / "b.log").start()]
    url = f"http://127.0.0.1:{settings.api_port}"
    key, _ = await create_key(settings, "c", list(SCOPES))
    try:
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {key}"}) as http:
            await http.post(f"{url}/template", json={"template_id": "t", "version": 1, "sms_body": "hi"})
            users = [f"user-{i}" for i in range(12)]
            for i, user in enumerate(users):
                await http.post(f"{url}/users", json={"user_id": user, "phone": f"+1415555{i:04d}"})
            deadline = time.monotonic() + 60
            while not all([await partitions_of(http, w) for w in workers]):
                assert time.monotonic() < deadline, "both workers never held partitions at once"
                await asyncio.sleep(0.2)
            await drained(settings)  # the users folded in
            nids = []
            for user in users:
                body = {
                    "idempotency_key": f"k-{user}",
                    "user_id": user,
                    "channels": ["sms"],
                    "template_id": "t",
                }
                async with http.post(f"{url}/notif", json=body) as resp:
                    nids.append((await resp.json())["notification_id"])
            statuses: dict[str, str] = {}
            while len(statuses) < len(nids) and time.monotonic() < deadline + 30:
                for nid in nids:
                    async with http.get(f"{url}/notif/{nid}") as resp:
                        if resp.status == 200 and (await resp.json())["status"] == "sent":
                            statuses[nid] = "sent"
                await asyncio.sleep(0.2)
            owners = {w.url: await partitions_of(http, w) for w in workers}
    finally:
        for w in workers:
            w.stop()
        await api.cleanup()
    assert all(owners.values()), f"each worker should own status partitions: {owners}"
    assert len(statuses) == len(nids), f"only {len(statuses)}/{len(nids)} answered as sent through worker A"
    assert sorted(d["nid"] for d in sim.state.deliveries) == sorted(nids)
