"""Fleet-wide rates in Redis, and the circuit breaker."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from clarion.providers.ratelimit import CircuitBreaker, RateLimiter, parse_rates
from clarion.topology.embedded import free_port
from clarion.topology.worker import WorkerProcess
from tests.conftest import test_settings
from tests.replay_harness import Replayer, Scenario

RATE = 80.0  # sms per second, for the whole fleet


def test_rates_parse_with_a_default_burst() -> None:
    assert parse_rates("sms=100, email=14/28") == {"sms": (100.0, 100.0), "email": (14.0, 28.0)}
    assert parse_rates("") == {}
    with pytest.raises(ValueError):
        parse_rates("sms=0")


def test_the_circuit_opens_after_a_streak_and_a_success_resets_it() -> None:
    breaker = CircuitBreaker(failures=3, open_s=60)
    for _ in range(2):
        breaker.record("sms", transient=True)
    breaker.record("sms", transient=False)  # a success in between: the streak starts again
    for _ in range(2):
        breaker.record("sms", transient=True)
    assert not breaker.is_open("sms")
    breaker.record("sms", transient=True)
    assert breaker.is_open("sms") and not breaker.is_open("email")


async def test_limiters_sharing_redis_share_one_bucket(redis_server) -> None:
    prefix = f"t{time.monotonic_ns()}"
    # a slow refill (one token every 2 s), so the time between the two calls cannot refill one
    limiters = [RateLimiter({"sms": (0.5, 10.0)}, redis_server.url, prefix) for _ in range(2)]
    try:
        # 10 tokens of burst between both: the first takes them all, the second must wait for refills
        granted = [await limiters[0]._take_tokens("sms", 10), await limiters[1]._take_tokens("sms", 10)]
        assert granted[0][0] == 10 and granted[1][0] == 0 and 0 < granted[1][1] <= 2.0
    finally:
        for limiter in limiters:
            await limiter.close()


async def test_two_workers_hold_the_fleet_rate(broker, redis_server, simulator, tmp_path: Path) -> None:
    sim, sim_url = simulator
    settings = test_settings(broker, redis_server.url, sim_url, tmp_path, critical_partitions=4,
                             provider_rates=f"sms={RATE:g}/5")  # fmt: skip
    other = replace(settings, web_port=free_port(), data_dir=str(tmp_path / "data-b"))
    replayer = Replayer(settings, sim)
    await replayer.prepare()
    total = 1200
    template = {"client_id": "c", "template_id": "w", "version": 1, "sms_body": "x"}
    steps: list[dict[str, Any]] = [{"input": "templates", "key": "c/w@1", "value": template}]
    for u in range(40):
        user = {"client_id": "c", "user_id": f"u{u}", "phone": f"+1415555{u:04d}"}
        steps.append({"input": "users", "key": f"c/u{u}", "value": user})
    for i in range(total):
        request = {"notification_id": f"n-{i}", "client_id": "c", "idempotency_key": f"k-{i}",
                   "user_id": f"u{i % 40}", "channels": ["sms"], "template_id": "w"}  # fmt: skip
        steps.append({"input": "critical.requests", "key": f"c/u{i % 40}", "value": request})
    workers = [WorkerProcess(settings, tmp_path / "a.log").start(), WorkerProcess(other, tmp_path / "b.log").start()]
    try:
        await replayer.feed(Scenario(steps=steps))
        deadline = time.monotonic() + 120
        while len(sim.state.deliveries) < total:
            assert time.monotonic() < deadline, f"{len(sim.state.deliveries)} of {total} delivered"
            await asyncio.sleep(0.2)
        senders = {log.name for log in (tmp_path / "a.log", tmp_path / "b.log")
                   if "sender process started" in log.read_text()}  # fmt: skip
    finally:
        for worker in workers:
            worker.stop()
    assert len(senders) == 2, f"both workers sent: {senders}"  # the bucket was shared, not one worker's own
    at = sorted(d["at"] for d in sim.state.deliveries)
    window = at[-200] - at[200]  # the steady middle: past the first burst, before the last stragglers
    rate = (len(at) - 400) / window
    assert RATE * 0.9 <= rate <= RATE * 1.1, f"{rate:.1f}/s against {RATE:g}/s"
    # and evenly: no second of the window far above the rate (a batch let out at once would be)
    per_second = Counter(int(t - at[200]) for t in at[200:-200])
    assert max(per_second.values()) <= RATE * 1.25, sorted(per_second.items())
