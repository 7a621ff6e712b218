"""Fleet-wide rates in Redis per provider account, critical before promo, and the circuit breaker."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from clarion.providers.dispatch import Dispatcher, order_for
from clarion.providers.ratelimit import CircuitBreaker, LocalBucket, RateLimiter, parse_rates
from clarion.providers.simulator import twilio as twilio_sim
from clarion.providers.twilio import TwilioClient
from clarion.tables.ledger import LocalLedger
from clarion.tables.templates import Rendered
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
        granted = [await limiters[0]._take_tokens("sms", "twilio:+1", 10),
                   await limiters[1]._take_tokens("sms", "twilio:+1", 10)]  # fmt: skip
        assert granted[0][0] == 10 and granted[1][0] == 0 and 0 < granted[1][1] <= 2.0
    finally:
        for limiter in limiters:
            await limiter.close()


def test_the_local_bucket_keeps_the_reserve_for_critical_sends() -> None:
    bucket = LocalBucket(rate=1.0, burst=10.0)
    assert bucket.take(10, reserve=2.0)[0] == 8  # promo: down to the reserve
    granted, wait_s = bucket.take(1, reserve=2.0)
    assert granted == 0 and 0.99 < wait_s <= 1.0  # until one more is above the reserve
    assert bucket.take(10)[0] == 2  # critical: the reserve too
    limiter = RateLimiter({"sms": (100.0, 10.0), "email": (1.0, 1.0)}, reserve=0.2)
    assert limiter.reserve("sms") == 2.0 and limiter.reserve("email") == 0.0  # promo must fit above it


async def saturate(
    demands: list[tuple[RateLimiter, str, str]], window_s: float, waiters: int = 20
) -> Counter[tuple[str, str]]:
    """Permits granted per (account, lane) in `window_s`, each demand keeping `waiters` sends waiting."""
    granted: Counter[tuple[str, str]] = Counter()
    end = time.monotonic() + window_s

    async def send_forever(limiter: RateLimiter, account: str, lane: str) -> None:
        while True:
            await limiter.permit("sms", account, lane)
            if time.monotonic() < end:
                granted[account, lane] += 1

    tasks = [asyncio.create_task(send_forever(*demand)) for demand in demands for _ in range(waiters)]
    await asyncio.sleep(window_s)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return granted


async def test_critical_goes_first_on_a_saturated_bucket_and_promo_alone_gets_the_rate(redis_server) -> None:
    prefix, rate, burst, window = f"t{time.monotonic_ns()}", 50.0, 10.0, 2.0
    # two sender processes on one account: one sending promo, one critical, both far over the rate
    promo, critical = (RateLimiter({"sms": (rate, burst)}, redis_server.url, prefix, reserve=0.2) for _ in range(2))
    alone = RateLimiter({"sms": (rate, burst)}, redis_server.url, prefix, reserve=0.2)
    try:
        promo_first = asyncio.create_task(saturate([(promo, "twilio:+1", "promo")], window + 0.2))
        await asyncio.sleep(0.2)  # promo has the full bucket to itself first: the worst case for critical
        both = await saturate([(critical, "twilio:+1", "critical")], window)
        got = both + await promo_first
        total = sum(got.values())
        assert total <= burst + rate * (window + 0.2) * 1.1, got  # one bucket between the two processes
        share = got["twilio:+1", "critical"] / (rate * window)
        assert share >= 0.8, got  # the reserve fraction (0.2) at the very least; in fact nearly all of it
        # promo alone on another account loses nothing to the reserve but burst: the whole rate
        solo = (await saturate([(alone, "twilio:+2", "promo")], window))["twilio:+2", "promo"]
        assert rate * window * 0.85 <= solo - (burst - alone.reserve("sms")) <= rate * window * 1.1, solo
    finally:
        for limiter in (promo, critical, alone):
            await limiter.close()


async def test_two_twilio_senders_each_get_their_own_rate(redis_server, simulator) -> None:
    """Two sender numbers (two deployments, or a worker and its fallback account) on one Redis: each
    number sends at the sms rate; the same number twice shares it. Timed by the simulator's receipts."""
    sim, sim_url = simulator
    rate, per_sender = 40.0, 80
    senders = ["+14155550001", "+14155550002"]

    def dispatcher(sender: str, prefix: str) -> Dispatcher:
        client = TwilioClient(sim_url, twilio_sim.ACCOUNT_SID, twilio_sim.AUTH_TOKEN, sender, "", 5.0)
        limiter = RateLimiter({"sms": (rate, 4.0)}, redis_server.url, prefix)
        return Dispatcher({"sms": client}, LocalLedger(60), 64, limiter=limiter)

    def orders(tag: str) -> list[Any]:
        return [order_for("critical", "sms", f"{tag}.{i}", f"n{i}", "+14155550100", Rendered(body="hi"), False)
                for i in range(per_sender)]  # fmt: skip

    async def run(pairs: list[tuple[str, str]], prefix: str) -> dict[str, float]:
        sim.state.deliveries.clear()
        dispatchers = [dispatcher(sender, prefix) for sender, _ in pairs]
        try:
            await asyncio.gather(*(d.run(orders(tag)) for d, (_, tag) in zip(dispatchers, pairs, strict=True)))
        finally:
            for d in dispatchers:
                await d.close()
        at: dict[str, list[float]] = {}
        for receipt in sim.state.deliveries:
            at.setdefault(receipt["from"], []).append(receipt["at"])
        return {sender: steady_rate(times) for sender, times in at.items()}

    own = await run([(senders[0], "a"), (senders[1], "b")], f"t{time.monotonic_ns()}")
    assert set(own) == set(senders)
    assert all(rate * 0.85 <= got <= rate * 1.15 for got in own.values()), own  # each its own bucket, not half
    shared = await run([(senders[0], "a"), (senders[0], "b")], f"t{time.monotonic_ns()}")
    assert list(shared) == senders[:1] and rate * 0.85 <= shared[senders[0]] <= rate * 1.15, shared  # one bucket


def steady_rate(times: list[float]) -> float:
    """Sends per second between the first and last tenth (past the first burst, before the stragglers)."""
    times = sorted(times)
    first, last = len(times) // 10, len(times) - 1 - len(times) // 10
    return (last - first) / (times[last] - times[first])


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
