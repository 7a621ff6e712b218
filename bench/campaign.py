"""The `campaign` phase of `make bench`: a campaign's fanout, and critical latency beside it (issue 8, part 6).

Two stacks (API + one worker each) on fresh topics. Each has `--campaign-users` users
u0..u{N-1} produced straight to the users topic (one ~1 MB batch per partition at a time)
and folded by the worker before anything is measured. The campaigns go to every user
({"all": true}) over one channel (`--campaign-channel`, email by default: the critical
requests are SMS, so their receipts and the campaign's are told apart by id anyway).

  fanout   The worker runs with promo_max_queued out of reach, so backpressure never
           pauses the expansion. Its rate is executions / seconds from the job's
           started_at to the first poll of the campaign's page (every 25 ms) showing every
           users partition done (`expansion_s_logged`: the worker's own log line for the
           last partition, for comparison). With `--campaign-lanes all` (the default) the
           same worker delivers the promo lanes meanwhile (`sent_when_expanded` says how
           far it got), so the figure is per worker process doing both; with `split` it
           runs `--lanes critical` and a second worker `--lanes promo` delivers. End to
           end: sent / (finished_at - started_at), the scheduler noting `done` about once
           a second. `lane_records` is what the promo lanes hold afterwards: the lag bound
           counts these records, each carrying hundreds of executions.
  latency  Open-loop POST /notif at `--campaign-rate` (1,000/s) for `--duration` s, on one
           `all` worker: first with no campaign (idle), then while a campaign to every
           user is sending (default backpressure). The target is p99 while it sends within
           1.5x of idle; the campaign's page is sampled every 0.25 s meanwhile (`timeline`),
           to show it was sending through the whole window. It is cancelled before the
           worker stops.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.partitioner import murmur2

from bench import stack
from clarion.schemas.codec import encode
from clarion.schemas.records import DeliveryTask, scoped
from clarion.topology import tansu
from clarion.topology.admin import ensure_topics
from clarion.topology.catalog import catalog
from clarion.topology.embedded import free_port
from clarion.topology.settings import Settings
from clarion.topology.worker import WorkerProcess

if TYPE_CHECKING:
    from bench.run import Bench

UNBOUNDED_LAG = 1 << 40  # promo_max_queued for the fanout row: backpressure never pauses it
POLL_S = 0.025  # how often the campaign's page is read while timing the expansion
ACTIVE = ("expanding", "sending")


async def seed_users(settings: Settings, n: int, channels: list[str]) -> float:
    """Topics, the bench template and users u0..u{n-1}, one produce batch per partition at a time; seconds taken."""
    started = time.monotonic()
    specs = catalog(settings)
    await ensure_topics(settings.bootstrap_servers, list(specs.values()))
    topic, partitions = specs["users"].topic, specs["users"].partitions
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers, max_batch_size=1 << 20, max_request_size=4 << 20
    )
    await producer.start()
    try:
        template = stack.TEMPLATE
        await producer.send_and_wait(specs["templates"].topic, encode(template), key=template.key.encode())
        batches: dict[int, Any] = {}
        sent = []
        for i in range(n):
            user = stack.user(i, channels)
            key, value = user.key.encode(), encode(user)
            partition = (murmur2(key) & 0x7FFFFFFF) % partitions  # as partitioning.partition_for, uncached
            batch = batches.get(partition) or batches.setdefault(partition, producer.create_batch())
            if batch.append(key=key, value=value, timestamp=None) is None:  # full: off it goes
                sent.append(await producer.send_batch(batch, topic, partition=partition))
                batch = batches[partition] = producer.create_batch()
                batch.append(key=key, value=value, timestamp=None)
        for partition, batch in batches.items():
            if batch.record_count():
                sent.append(await producer.send_batch(batch, topic, partition=partition))
        await asyncio.gather(*sent)
    finally:
        await producer.stop()
    return time.monotonic() - started


async def wait_folded(worker_url: str, n: int, timeout_s: float) -> float:
    """Wait until the worker's users agent has folded `n` users (its /stats counter); seconds waited."""
    started = time.monotonic()
    folded = 0
    async with aiohttp.ClientSession() as http:
        while time.monotonic() - started < timeout_s:
            try:
                async with http.get(f"{worker_url}/stats") as resp:
                    counters = (await resp.json())["counters"] if resp.status == 200 else {}
            except aiohttp.ClientError:
                counters = {}
            folded = counters.get("stage/users/items", 0)
            if folded >= n:
                return time.monotonic() - started
            await asyncio.sleep(0.1)
    raise TimeoutError(f"the worker folded {folded} of {n} users in {timeout_s:.0f}s")


class Campaigns:
    """POST /promo through the API; the campaign's page read from the worker (GET /promo/{id} without the hop)."""

    def __init__(self, api_url: str, worker_url: str, key: str) -> None:
        self.api_url, self.worker_url = api_url, worker_url
        self.http = aiohttp.ClientSession(headers={"Authorization": f"Bearer {key}"})

    async def __aenter__(self) -> Campaigns:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.http.close()

    async def create(self, campaign_id: str, channel: str) -> None:
        body = {"campaign_id": campaign_id, "template_id": "bench", "channels": [channel],
                "audience": {"all": True}, "params": {"n": 0}}  # fmt: skip
        async with self.http.post(f"{self.api_url}/promo", json=body) as resp:
            if resp.status != 202:
                raise RuntimeError(f"POST /promo answered {resp.status}: {await resp.text()}")

    async def get(self, campaign_id: str) -> dict[str, Any] | None:
        """The campaign's page, or None while its job is not folded yet."""
        async with self.http.get(f"{self.worker_url}/promo/{campaign_id}/") as resp:
            if resp.status == 404:
                return None
            if resp.status != 200:
                raise RuntimeError(f"GET /promo/{campaign_id} answered {resp.status}: {await resp.text()}")
            return orjson.loads(await resp.read())

    async def until(self, campaign_id: str, test: Callable[[dict[str, Any]], bool], timeout_s: float) -> dict[str, Any]:
        """Poll the page every POLL_S until `test` holds; the page, with "seen_at" (time.time()) added."""
        deadline = time.monotonic() + timeout_s
        page: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            page = await self.get(campaign_id)
            if page is not None and test(page):
                return {**page, "seen_at": time.time()}
            if page is not None and page["state"] in ("cancelled", "done") and not test(page):
                raise RuntimeError(f"campaign {campaign_id} ended as {page['state']}: {page}")
            await asyncio.sleep(POLL_S)
        raise TimeoutError(f"campaign {campaign_id} not there after {timeout_s:.0f}s: {page}")


async def lane_records(settings: Settings) -> int:
    """Records on the promo lanes and their retry tiers (each holds many executions: topology/outbox.py)."""
    specs = catalog(settings)
    tps = [
        TopicPartition(spec.topic, p)
        for name, spec in specs.items()
        if name.startswith("promo.") and spec.value is DeliveryTask
        for p in range(spec.partitions)
    ]
    return sum((await tansu.fresh_end_offsets(settings.bootstrap_servers, tps)).values())


def expanded_in_log(log_path: Any, campaign_key: str) -> float | None:
    """When the worker logged the last of the campaign's partitions expanded (its JSON lines' ts)."""
    last = None
    for line in log_path.read_bytes().splitlines():
        if b"campaign partition expanded" not in line or not line.startswith(b"{"):
            continue
        try:
            row = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if row.get("campaign") == campaign_key:
            last = max(last or 0.0, row["ts"])
    return last


class Phase:
    def __init__(self, bench: Bench) -> None:
        self.bench = bench
        args = bench.args
        self.n = args.campaign_users
        self.channel = args.campaign_channel
        self.channels = sorted({"sms", self.channel})  # the critical requests are SMS to u0..u199

    async def start_stack(self, settings: Settings) -> tuple[Any, stack.Child, dict[str, Any]]:
        """Seed, start the worker and the API, wait until the users are folded."""
        seed_s = await seed_users(settings, self.n, self.channels)
        worker = stack.worker(settings, self.bench.run_dir)
        api = stack.api(settings, self.bench.run_dir)
        try:
            await worker.wait_ready()
            fold_s = await wait_folded(worker.url, self.n, timeout_s=120 + self.n / 1000)
        except BaseException:
            api.stop()
            worker.stop()
            raise
        return worker, api, {"seed_s": round(seed_s, 2), "fold_s": round(fold_s, 2)}

    def campaigns(self, settings: Settings, worker: Any, key: str) -> Campaigns:
        return Campaigns(f"http://127.0.0.1:{settings.api_port}", worker.url, key)

    # -- fanout ----------------------------------------------------------------------------

    async def fanout(self) -> dict[str, Any]:
        bench = self.bench
        split = bench.args.campaign_lanes == "split"
        settings = replace(bench.settings(), promo_max_queued=UNBOUNDED_LAG, lanes="critical" if split else "all")
        worker, api, setup = await self.start_stack(settings)
        campaign_id = f"fanout-{uuid.uuid4().hex[:8]}"
        pids = {"worker": worker.proc.pid, "api": api.pid}
        promo = None
        try:
            if split:  # the promo lanes in a process of their own, as `clarion worker --lanes promo`
                promo_settings = replace(
                    settings, lanes="promo", web_port=free_port(), data_dir=settings.data_dir + "-p"
                )
                promo = WorkerProcess(promo_settings, bench.run_dir / f"worker-{settings.app_id}-promo.log").start()
                await promo.wait_ready()
                pids["promo_worker"] = promo.proc.pid
            sends_in = promo or worker
            key = await bench.api_key(settings)
            async with self.campaigns(settings, worker, key) as c:
                profiler = bench.start_profiler(worker.proc.pid, "campaign-fanout") if bench.args.profile else None
                window = stack.CpuWindow(bench.pids(**pids)).start()
                try:
                    await c.create(campaign_id, self.channel)
                    parts = settings.critical_partitions
                    expanded = await c.until(
                        campaign_id, lambda p: p["counters"]["partitions_expanded"] >= parts, 120 + self.n / 500
                    )
                    cpu_expansion = self.with_sender(window.stop(), sends_in.proc.pid)
                finally:
                    if profiler is not None:
                        bench.stop_profiler(profiler)
                records = await lane_records(settings)
                done = await c.until(campaign_id, lambda p: p["state"] == "done", timeout_s=300 + self.n / 100)
                cpu_total = self.with_sender(window.stop(), sends_in.proc.pid)
            last_receipt = (await self.sim_stats())["last_at"]
        finally:
            if promo is not None:
                promo.stop()
            api.stop()
            worker.stop()
        started = expanded["started_at"]
        counters = expanded["counters"]
        seconds = expanded["seen_at"] - started
        logged = expanded_in_log(worker.log_path, scoped(stack.CLIENT, campaign_id))
        sent = done["counters"]["sent"]
        e2e = done["finished_at"] - started
        return {
            "users": self.n,
            "channel": self.channel,
            "partitions": parts,
            "lanes": "critical + promo workers" if split else "all",
            **setup,
            "backpressure": f"off (promo_max_queued={UNBOUNDED_LAG})",
            "expand_batch": settings.promo_expand_batch,
            "tick_s": settings.promo_tick_s,
            "executions": counters["executions"],
            "expansion_s": round(seconds, 3),
            "executions_per_s": counters["executions"] / seconds,
            "expansion_s_logged": round(logged - started, 3) if logged else None,
            "lane_records": records,
            "executions_per_record": round(counters["executions"] / max(records, 1), 1),
            "sent_when_expanded": counters["sent"],
            "delivery_concurrent": counters["sent"] > 0,
            "worker_cpu_us_per_execution": cpu_expansion["worker"] / max(counters["executions"], 1) * 1e6,
            "cpu_s_expansion": rounded(cpu_expansion),
            "sent": sent,
            "end_to_end_s": round(e2e, 3),
            "sent_per_s": sent / e2e,
            "last_receipt_s": round(last_receipt - started, 3) if last_receipt else None,
            "cpu_s_total": rounded(cpu_total),
            "counters": done["counters"],
        }

    def with_sender(self, cpu: dict[str, float], worker_pid: int) -> dict[str, float]:
        """The sender process starts at the worker's first send (inside the window): all its CPU counts."""
        sender = stack.sender_of(worker_pid)
        return {**cpu, "sender": stack.cpu_seconds(sender) if sender else 0.0}

    async def sim_stats(self) -> dict[str, Any]:
        async with aiohttp.ClientSession() as http:
            return await stack.sim_stats(http, self.bench.sim_url)

    # -- critical latency beside a campaign ------------------------------------------------

    async def latency(self) -> dict[str, Any]:
        bench = self.bench
        rate, duration = bench.args.campaign_rate, bench.args.duration
        settings = bench.settings()
        worker, api, setup = await self.start_stack(settings)
        api_url = f"http://127.0.0.1:{settings.api_port}"
        campaign_id = f"beside-{uuid.uuid4().hex[:8]}"
        try:
            key = await bench.api_key(settings)
            await bench.open_loop(api_url, key, 100, 2)  # warm-up: connections, caches, the sender process
            sender = stack.sender_of(worker.proc.pid)
            pids = bench.pids(worker=worker.proc.pid, api=api.pid, **({"sender": sender} if sender else {}))
            window = stack.CpuWindow(pids).start()
            await asyncio.sleep(5)  # settled (the users' fold and its changelog behind it), as the CPU shows
            settled = percent(window.stop())
            window.start()
            idle = await bench.open_loop(api_url, key, rate, duration)
            idle["cpu_percent"] = percent(window.stop())
            async with self.campaigns(settings, worker, key) as c:
                await c.create(campaign_id, self.channel)
                await c.until(campaign_id, lambda p: p["state"] in ACTIVE and p["counters"]["sent"] > 0, 60)
                samples: list[tuple[float, dict[str, Any]]] = []
                sampler = asyncio.create_task(sample(c, campaign_id, samples))
                window.start()
                began = time.time()
                try:
                    busy = await bench.open_loop(api_url, key, rate, duration)
                finally:
                    sampler.cancel()
                busy["cpu_percent"] = percent(window.stop())
                busy["campaign"] = progress_in(samples, began, began + duration)
                # Cancelled before the worker stops: what it has in hand ends `cancelled`, without a call.
                async with c.http.post(f"{api_url}/promo/{campaign_id}/cancel") as resp:
                    resp.raise_for_status()
                await c.until(campaign_id, lambda p: p["state"] in ("cancelled", "done"), 30)
        finally:
            api.stop()
            worker.stop()
        ratio = busy["p99_ms"] / idle["p99_ms"] if busy["p99_ms"] and idle["p99_ms"] else None
        return {
            "users": self.n,
            "channel": self.channel,
            **setup,
            "backpressure": f"promo_max_queued={settings.promo_max_queued}",
            "cpu_percent_before": settled,
            "idle": idle,
            "during_campaign": busy,
            "p99_ratio": round(ratio, 2) if ratio else None,
            "p50_ratio": round(busy["p50_ms"] / idle["p50_ms"], 2) if busy["p50_ms"] and idle["p50_ms"] else None,
        }

    async def run(self) -> dict[str, Any]:
        out = {"fanout": await self.fanout()}
        await self.forget_deliveries()
        out["latency"] = await self.latency()
        await self.forget_deliveries()
        return out

    async def forget_deliveries(self) -> None:
        """Drop the simulator's receipts (a 1M-user campaign's would hold a GB); later phases count from 0."""
        async with aiohttp.ClientSession() as http, http.delete(f"{self.bench.sim_url}/_sim/deliveries") as resp:
            resp.raise_for_status()


async def sample(c: Campaigns, campaign_id: str, into: list[tuple[float, dict[str, Any]]]) -> None:
    """(time.time(), page) of the campaign every 0.25 s, until cancelled."""
    while True:
        page = await c.get(campaign_id)
        if page is not None:
            into.append((time.time(), page))
        await asyncio.sleep(0.25)


def progress_in(samples: list[tuple[float, dict[str, Any]]], begin: float, end: float) -> dict[str, Any]:
    """What the campaign did between `begin` and `end`, from the samples around that window."""
    inside = [s for s in samples if begin <= s[0] <= end] or samples
    if not inside:
        return {"samples": 0}
    (t0, first), (t1, last) = inside[0], inside[-1]
    span = max(t1 - t0, 1e-9)
    return {
        "samples": len(inside),
        "states": sorted({page["state"] for _, page in inside}),
        "active_throughout": all(page["state"] in ACTIVE for _, page in inside) and t1 >= end - 1.0,
        "sent_per_s": round((last["counters"]["sent"] - first["counters"]["sent"]) / span),
        "executions_per_s": round((last["counters"]["executions"] - first["counters"]["executions"]) / span),
        "sent_at_end": last["counters"]["sent"],
        "executions_at_end": last["counters"]["executions"],
        # [s since the window began, executions, sent]: how expansion and sending went
        "timeline": [[round(t - begin, 2), p["counters"]["executions"], p["counters"]["sent"]] for t, p in samples],
    }


def rounded(cpu: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 2) for k, v in cpu.items()}


def percent(cpu: dict[str, float]) -> dict[str, float]:
    """A CpuWindow's seconds as % of a core per process."""
    return {k: round(100 * v / cpu["wall"], 1) for k, v in cpu.items() if k != "wall"}


def rows(c: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The phase's lines of the results table."""
    out = []
    f = c.get("fanout")
    if f:
        split = f.get("lanes", "all") != "all"

        def cpu_of(cpu: dict[str, float]) -> str:
            text = f"worker {cpu['worker']:.1f} s"
            if split:
                text += f" + promo worker {cpu.get('promo_worker', 0.0):.1f} s"
            return text + f" + sender {cpu['sender']:.1f} s CPU"

        if f["delivery_concurrent"]:
            where = "a promo worker" if split else "the same worker"
            concurrent = f"delivered meanwhile by {where} ({f['sent_when_expanded']:,} sent by then)"
        else:
            concurrent = "nothing sent by then"
        out.append(
            (
                f"campaign fanout: {f['users']:,} users, 1 {'critical ' if split else ''}worker",
                f"{f['executions_per_s']:,.0f} executions/s",
                f"{f['executions']:,} in {f['expansion_s']:.2f} s (started_at -> {f['partitions']} partitions done); "
                f"{cpu_of(f['cpu_s_expansion'])}, {f['worker_cpu_us_per_execution']:.0f} µs worker CPU each; "
                f"backpressure off; {concurrent}",
            )
        )
        out.append(
            (
                f"campaign end to end: {f['users']:,} users, {f['channel']}",
                f"{f['sent_per_s']:,.0f} sent/s",
                f"{f['sent']:,} sent, done {f['end_to_end_s']:.1f} s after the start "
                f"(last receipt at {f['last_receipt_s']} s); {cpu_of(f['cpu_s_total'])}",
            )
        )
    lat = c.get("latency")
    if lat:
        for label, row in (("no campaign", lat["idle"]), ("while a campaign sends", lat["during_campaign"])):
            detail = f"{row['delivered']:,}/{row['accepted']:,} delivered, errors {row['errors'] or 0}"
            if not row["sustained"]:
                detail += " (NOT sustained: p99 >= 1 s or < 99% delivered)"
            detail += f"; worker {row['cpu_percent']['worker']}% CPU"
            if "campaign" in row:
                camp = row["campaign"]
                if camp.get("samples"):
                    detail += (
                        f"; campaign ({lat['users']:,} users, {lat['channel']}) sent {camp['sent_per_s']:,}/s "
                        f"meanwhile, {'/'.join(camp['states'])}"
                        + ("" if camp["active_throughout"] else " (NOT active throughout)")
                    )
                detail += f"; p99 {lat['p99_ratio']}x idle (target <= 1.5x)"
            out.append(
                (
                    f"critical {row['offered_per_s']:,.0f}/s, {label}",
                    f"p50 {row['p50_ms']} / p90 {row['p90_ms']} / p99 {row['p99_ms']} / max {row['max_ms']} ms",
                    detail,
                )
            )
    return out
