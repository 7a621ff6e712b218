"""A `promo` worker does not start beside an `all` one (nor `all` beside `promo`): clarion/topology/lanes_guard.py."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest

from clarion.topology.embedded import free_port
from clarion.topology.lanes_guard import LIVE_S, LanesClash, LanesRegistry
from clarion.topology.worker import WorkerProcess
from tests.conftest import test_settings


async def test_lanes_clash_only_between_all_and_promo_and_only_while_live(broker, redis_server, tmp_path: Path) -> None:
    base = test_settings(broker, redis_server.url, "http://127.0.0.1:9", tmp_path)
    everything = LanesRegistry(replace(base, lanes="all"), member="a")
    critical = LanesRegistry(replace(base, lanes="critical"), member="c")
    promo = LanesRegistry(replace(base, lanes="promo"), member="p")
    try:
        await everything.join()
        await critical.join()  # critical goes beside anything
        with pytest.raises(LanesClash, match="run promo workers beside critical ones"):
            await promo.join()
        await everything.leave()
        await promo.join()  # the all worker is gone
        with pytest.raises(LanesClash):
            await LanesRegistry(replace(base, lanes="all"), member="a2").join()
        # a member not heard from within LIVE_S is gone too (a worker that was killed)
        await promo.redis.zadd(promo._key("promo"), {"p": time.time() - LIVE_S - 1})
        await everything.join()
        assert await everything.heartbeat() == [] and await promo.heartbeat() == ["a"]
    finally:
        for registry in (everything, critical, promo):
            await registry.close()


async def test_a_promo_worker_beside_an_all_worker_refuses_to_start(broker, redis_server, tmp_path: Path) -> None:
    settings = test_settings(broker, redis_server.url, "http://127.0.0.1:9", tmp_path)
    main = WorkerProcess(settings, tmp_path / "all.log").start()
    try:
        await main.wait_ready()
        beside = replace(settings, lanes="promo", data_dir=str(tmp_path / "promo"), web_port=free_port())
        promo = WorkerProcess(beside, tmp_path / "promo.log")
        promo.start()
        assert promo.proc is not None
        code = promo.proc.wait(timeout=60)
        log = (tmp_path / "promo.log").read_text()
        assert code != 0 and "clash with 1 live worker(s) running 'all'" in log, log[-3000:]
        assert main.proc is not None and main.proc.poll() is None  # the running one goes on
    finally:
        main.stop()
