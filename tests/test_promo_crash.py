"""Campaigns through worker crashes and across two workers: the same exact counts.

A 10,000-user campaign is paced so that a SIGKILL lands mid-expansion; the worker
restarts with its data dir (RocksDB as it was) or with an empty one (everything read
back from the changelogs), resumes each partition from its cursor, and every user gets
the message exactly once (counted at the simulator) with exact campaign counters.
With two workers, each expands the users partitions it holds, and only those.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from clarion.keys import create_key
from clarion.providers.simulator import start_simulator
from clarion.tables.api_keys import SCOPES
from clarion.topology.embedded import free_port
from clarion.topology.worker import WorkerProcess
from clarion.web.api import create_api
from tests.api_stack import Stack
from tests.conftest import test_settings
from tests.test_promo import SALE, Client, promo

pytestmark = pytest.mark.asyncio(loop_scope="module")
USERS = 10_000


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def env(broker, redis_server, tmp_path_factory) -> AsyncIterator[tuple[Stack, Client]]:
    """API + simulator (no worker: each test runs its own) and a client with 10,000 users."""
    tmp = Path(tmp_path_factory.mktemp("promo-crash"))
    sim_port = free_port()
    sim, sim_runner = await start_simulator("127.0.0.1", sim_port)
    settings = test_settings(broker, redis_server.url, f"http://127.0.0.1:{sim_port}", tmp,
                             critical_partitions=4, outcome_partitions=2, promo_partitions=2,
                             promo_tick_s=0.05, promo_expand_batch=200)  # fmt: skip
    runner = web.AppRunner(create_api(settings), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", settings.api_port).start()
    key, _ = await create_key(settings, "crash", list(SCOPES))
    worker = WorkerProcess(settings, tmp / "setup.log").start()
    async with aiohttp.ClientSession() as http:
        stack = Stack(f"http://127.0.0.1:{settings.api_port}", http, sim, settings, key)
        client = Client(stack, "crash", key)
        assert (await client.call("POST", "/template", SALE))[0] == 201
        await client.load_users([{"user_id": f"u{i}", "email": f"u{i}@crash.example"} for i in range(USERS)])
        await worker.wait_ready()
        worker.stop()  # the users topic is written; each test folds it with its own workers
        yield stack, client
    await runner.cleanup()
    await sim_runner.cleanup()


async def counters_when(client: Client, campaign_id: str, ready: Any, timeout_s: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    status, body = 0, None
    while time.monotonic() < deadline:
        status, body = await client.call("GET", f"/promo/{campaign_id}")
        if status == 200 and ready(body):
            return body
        await asyncio.sleep(0.05)
    raise AssertionError(f"{campaign_id}: condition not met in {timeout_s}s; last answer {status} {body}")


@pytest.mark.parametrize("data_dir", ["same", "empty"])
async def test_killed_mid_expansion_resumes_without_doubles(env: tuple[Stack, Client], data_dir: str) -> None:
    stack, client = env
    settings, tmp = stack.settings, Path(stack.settings.data_dir).parent
    campaign = f"crash-{data_dir}"
    worker = WorkerProcess(settings, tmp / f"{campaign}-1.log").start()
    await worker.wait_ready(90)
    before = len(stack.sim.state.deliveries)
    assert (await client.call("POST", "/promo", promo(campaign, pacing_per_s=1000)))[0] == 202
    mid = await counters_when(client, campaign, lambda b: 1000 <= b["counters"]["executions"])
    assert mid["counters"]["executions"] < USERS, "the kill must land mid-expansion"
    assert worker.proc is not None
    worker.proc.kill()
    worker.proc.wait()
    restarted = settings if data_dir == "same" else replace(settings, data_dir=str(tmp / f"{campaign}-empty"))
    worker = WorkerProcess(restarted, tmp / f"{campaign}-2.log").start()
    try:
        await worker.wait_ready(90)
        done = await counters_when(client, campaign, lambda b: b["state"] == "done", timeout_s=150)
    except AssertionError as exc:
        got = Counter(r["address"] for r in stack.sim.state.deliveries[before:] if "crash.example" in r["address"])
        missing = sorted(f"u{i}@crash.example" for i in range(USERS) if f"u{i}@crash.example" not in got)
        raise AssertionError(f"{exc}; simulator: {len(got)} addresses, {sum(got.values())} deliveries; "
                             f"missing {missing[:20]}") from None
    finally:
        worker.stop()
    got = Counter(r["address"] for r in stack.sim.state.deliveries[before:] if r["address"].endswith("crash.example"))
    assert len(got) == USERS and set(got.values()) == {1}
    counters = done["counters"]
    assert counters["sent"] == USERS and counters["executions"] == USERS and counters["targeted"] == USERS


async def test_two_workers_each_expand_their_own_partitions(env: tuple[Stack, Client]) -> None:
    stack, client = env
    settings, tmp = stack.settings, Path(stack.settings.data_dir).parent
    second = replace(settings, web_port=free_port(), data_dir=str(tmp / "second"))
    logs = [tmp / "two-1.log", tmp / "two-2.log"]
    workers = [WorkerProcess(settings, logs[0]).start(), WorkerProcess(second, logs[1]).start()]
    try:
        for worker in workers:
            await worker.wait_ready(90)
        await asyncio.sleep(8)  # the second join rebalances; both ready again after it
        for worker in workers:
            await worker.wait_ready(90)
        before = len(stack.sim.state.deliveries)
        assert (await client.call("POST", "/promo", promo("two")))[0] == 202
        done = await counters_when(client, "two", lambda b: b["state"] == "done", timeout_s=120)
    finally:
        for worker in workers:
            worker.stop()
    got = Counter(r["address"] for r in stack.sim.state.deliveries[before:] if r["address"].endswith("crash.example"))
    assert len(got) == USERS and set(got.values()) == {1} and done["counters"]["sent"] == USERS
    expanded = [expanded_partitions(log, "crash/two") for log in logs]
    assert expanded[0] and expanded[1], expanded  # both took part
    assert expanded[0].isdisjoint(expanded[1]) and expanded[0] | expanded[1] == set(range(4))


def expanded_partitions(log: Path, campaign: str) -> set[int]:
    found = set()
    for line in log.read_text().splitlines():
        if "campaign partition expanded" in line and f'"campaign":"{campaign}"' in line:
            found.add(int(re.search(r'"partition":(\d+)', line).group(1)))  # type: ignore[union-attr]
    return found
