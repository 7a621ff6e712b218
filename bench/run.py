"""`make bench`: clarion's hot path measured stage by stage, side by side, in one run.

One embedded Tansu broker and one Redis for the whole run; every phase uses fresh topics
and a fresh consumer group on it. The simulator answers at 0 ms. Phases:

  ceiling   a bare aiokafka consume -> produce pass-through of preloaded records
  pipeline  requests preloaded on critical.requests -> simulator receipts, one worker
  latency   open-loop POST /notif at fixed rates -> simulator receipts (API + worker)
  ingest    POST /notif and POST /notif/batch into one API process
  campaign  a campaign's fanout rate (executions/s, one worker) and end-to-end rate; critical
            latency at 1,000/s with no campaign and while one sends (bench/campaign.py)

The API phases send an API key of client "bench" (scopes send, read), made per phase.

Prints one table and writes the numbers to bench/results/<UTC time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench import campaign, stack
from clarion.keys import create_key
from clarion.schemas.codec import encode
from clarion.topology.embedded import EmbeddedBroker, EmbeddedRedis
from clarion.topology.settings import Settings

HERE = Path(__file__).parent
RESULTS = HERE / "results"


class Bench:
    def __init__(self, args: argparse.Namespace, broker: EmbeddedBroker, redis: EmbeddedRedis, run_dir: Path) -> None:
        self.args = args
        self.broker = broker
        self.redis = redis
        self.run_dir = run_dir
        self.sim, self.sim_url = stack.simulator(run_dir)
        self.results: dict[str, Any] = {}

    def settings(self) -> Any:
        return stack.settings_for(
            self.broker.bootstrap, self.redis.url, self.sim_url, self.run_dir, self.args.partitions
        )

    def pids(self, **extra: int) -> dict[str, int]:
        return {"tansu": self.broker.proc.pid, "simulator": self.sim.pid, **extra}

    async def delivered_so_far(self) -> int:
        import aiohttp

        async with aiohttp.ClientSession() as http:
            return (await stack.sim_stats(http, self.sim_url))["deliveries"]

    # -- ceiling ---------------------------------------------------------------------------

    async def ceiling(self, records: int, record_bytes: int, per_record: int) -> dict[str, Any]:
        """Bare pass-through of `records` records of `record_bytes * per_record` bytes each."""
        source = f"ceiling-{time.monotonic_ns()}"
        admin = AIOKafkaAdminClient(bootstrap_servers=self.broker.bootstrap)
        await admin.start()
        parts = self.args.partitions
        await admin.create_topics([NewTopic(source, parts, 1), NewTopic(source + "-out", parts, 1)])
        await admin.close()
        producer = AIOKafkaProducer(
            bootstrap_servers=self.broker.bootstrap, linger_ms=5, max_batch_size=1 << 20, max_request_size=4 << 20
        )
        await producer.start()
        value = b"x" * record_bytes * per_record
        sent = [await producer.send(source, value, key=str(i % 200).encode()) for i in range(records)]
        await asyncio.gather(*sent)
        await producer.stop()
        out = await self.run_script("passthrough.py", self.broker.bootstrap, source, source + "-out", str(records))
        result = dict(out)
        result["items_per_s"] = result["records_per_s"] * per_record
        result["record_bytes"] = len(value)
        return result

    # -- pipeline --------------------------------------------------------------------------

    async def pipeline(self, n: int, channels: list[str], per_record: int, profile: bool = False) -> dict[str, Any]:
        settings = self.settings()
        users = stack.users(200, channels)
        await stack.seed(settings, users)
        records = await stack.preload(settings, stack.requests(n, users, channels), per_record)
        before = await self.delivered_so_far()
        expected = n * len(channels) + before
        worker = stack.worker(settings, self.run_dir)
        window = stack.CpuWindow(self.pids(worker=worker.proc.pid))
        profiler = None
        try:
            # The clock starts when the worker takes its first request (not at the first
            # receipt, which would leave out the routing of the backlog).
            started = await stack.wait_for_stage(worker.url, "critical.requests", timeout_s=120)
            window.start()
            if profile:
                profiler = self.start_profiler(worker.proc.pid, f"pipeline-{len(channels)}ch-{per_record}")
            stats = await stack.wait_for_deliveries(self.sim_url, expected, timeout_s=600)
            cpu = window.stop()
            # started on the worker's first delivery, inside the window: all its CPU counts
            sender = stack.sender_of(worker.proc.pid)
            cpu["sender"] = stack.cpu_seconds(sender) if sender else 0.0
        finally:
            if profiler is not None:
                self.stop_profiler(profiler)
            worker.stop()
        deliveries = expected - before
        receipts = await stack.deliveries(self.sim_url, since=before)
        span = receipts[-1]["at"] - started
        return {
            "requests": n,
            "channels": channels,
            "requests_per_record": per_record,
            "records": records,
            "deliveries": deliveries,
            "seconds": span,
            "deliveries_per_s": (deliveries - 1) / span,
            "worker_cpu_us_per_delivery": cpu["worker"] / deliveries * 1e6,
            "sender_cpu_us_per_delivery": cpu["sender"] / deliveries * 1e6,
            "cpu_s": cpu,
            "simulator_total": stats["deliveries"],
        }

    def start_profiler(self, pid: int, label: str) -> tuple[subprocess.Popen[bytes], Path]:
        RESULTS.mkdir(exist_ok=True)
        path = RESULTS / f"{self.stamp}-{label}.speedscope.json"
        cmd = [str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(pid), "--rate", "250"]
        cmd += ["--format", "speedscope", "--output", str(path)]
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), path

    def stop_profiler(self, profiler: tuple[subprocess.Popen[bytes], Path]) -> None:
        proc, path = profiler
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
        self.results.setdefault("profiles", []).append(str(path.relative_to(HERE.parent)))

    # -- latency ---------------------------------------------------------------------------

    async def run_script(self, script: str, *argv: str) -> dict[str, Any]:
        """Run bench/<script> in its own process; it prints one JSON object."""
        cmd = [sys.executable, str(HERE / script), *argv]
        proc = await asyncio.create_subprocess_exec(*cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        out, _ = await proc.communicate()
        if proc.returncode:
            raise RuntimeError(f"{script} {' '.join(argv)} exited with {proc.returncode}")
        return json.loads(out)

    async def api_key(self, settings: Settings) -> str:
        """A new key for the bench's client on this phase's topics, good for sending and reading."""
        key, _ = await create_key(settings, stack.CLIENT, ["send", "read"], name="bench")
        return key

    async def loadgen(self, mode: str, api_url: str, key: str, *argv: str) -> dict[str, Any]:
        return await self.run_script("loadgen.py", mode, "--url", api_url, "--key", key, *argv)

    async def open_loop(self, api_url: str, key: str, rate: float, duration: float) -> dict[str, Any]:
        """Offer `rate` POST /notif per second; latency is schedule -> simulator receipt."""
        out_file = self.run_dir / f"open-{rate:g}-{time.monotonic_ns()}.jsonl"
        before = await self.delivered_so_far()
        summary = await self.loadgen(
            "open", api_url, key, "--rate", str(rate), "--duration", str(duration), "--out", str(out_file)
        )
        sent = {}
        for line in out_file.read_text().splitlines():
            row = json.loads(line)
            if row["nid"]:
                sent[row["nid"]] = row["scheduled"]
        # Receipts fetched as they come (only the new ones each time), and only this loop's
        # counted: a campaign may be delivering on the same simulator meanwhile.
        deadline = time.monotonic() + 30
        receipts: dict[str, float] = {}
        seen = before
        while time.monotonic() < deadline:
            rows = await stack.deliveries(self.sim_url, since=seen)
            seen += len(rows)
            receipts.update((r["nid"], r["at"]) for r in rows if r.get("nid") in sent)
            if len(receipts) >= len(sent):
                break
            await asyncio.sleep(0.5)
        latencies = sorted((receipts[nid] - t) * 1000 for nid, t in sent.items() if nid in receipts)
        stats = percentiles(latencies)
        return {
            "offered_per_s": rate,
            "sustained": len(latencies) >= 0.99 * rate * duration and (stats["p99_ms"] or 1e9) < 1000,
            "accepted_per_s": summary["achieved_rate"],
            "accepted": len(sent),
            "delivered": len(latencies),
            "errors": summary["errors"],
            **stats,
        }

    async def latency(self, rates: list[float], duration: float) -> dict[str, Any]:
        settings = self.settings()
        users = stack.users(200, ["sms"])
        await stack.seed(settings, users)
        worker = stack.worker(settings, self.run_dir)
        api = stack.api(settings, self.run_dir)
        api_url = f"http://127.0.0.1:{settings.api_port}"
        out: dict[str, Any] = {"fresh": [], "search": []}
        try:
            await worker.wait_ready()
            key = await self.api_key(settings)
            await self.open_loop(api_url, key, 100, 2)  # warm-up: connections, caches
            await asyncio.sleep(settings.fetch_idle_after_s + 3)  # long enough for the worker to go idle
            window = stack.CpuWindow(self.pids(worker=worker.proc.pid, api=api.pid)).start()
            await asyncio.sleep(10)
            idle = window.stop()
            out["idle_cpu_percent"] = {k: round(100 * v / idle["wall"], 1) for k, v in idle.items() if k != "wall"}
            for rate in rates:
                out["fresh"].append(await self.open_loop(api_url, key, rate, duration))
            # The highest rate the stack sustains: every request delivered, p99 under 1 s.
            # Step up from the highest fixed rate that held, until one does not.
            held = [row["offered_per_s"] for row in out["fresh"] if row["sustained"]]
            top = max(held, default=rates[0])
            for step in (1.5, 2.0, 2.5, 3.0, 4.0):
                if top * step >= max(rates) and not all(r["sustained"] for r in out["fresh"]):
                    break  # a fixed rate above this already failed
                row = await self.open_loop(api_url, key, top * step, duration)
                out["search"].append(row)
                if not row["sustained"]:
                    break
            out["highest_sustained_per_s"] = max(
                (r["offered_per_s"] for r in out["fresh"] + out["search"] if r["sustained"]), default=None
            )
            out["grown"] = await self.grow(api_url, key, self.args.grow)
            out["after_growth"] = [await self.open_loop(api_url, key, rates[1], duration)]
        finally:
            api.stop()
            worker.stop()
        return out

    async def grow(self, api_url: str, key: str, total: int) -> dict[str, Any]:
        """Push `total` notifications through the batch endpoint and wait until all are delivered."""
        before = await self.delivered_so_far()
        started = time.monotonic()
        accepted = 0
        while accepted < total:
            summary = await self.loadgen(
                "batch", api_url, key, "--connections", "2", "--duration", "5", "--warmup", "0"
            )
            if not summary["notifications_accepted"]:
                raise RuntimeError(f"POST /notif/batch accepted nothing: {summary['errors']}")
            accepted += summary["notifications_accepted"]
        await stack.wait_for_deliveries(self.sim_url, before + accepted, timeout_s=600)
        return {"notifications": accepted, "seconds": time.monotonic() - started}

    # -- ingest ----------------------------------------------------------------------------

    async def ingest(self, duration: float) -> dict[str, Any]:
        settings = self.settings()
        await stack.seed(settings, stack.users(200, ["sms"]))
        api = stack.api(settings, self.run_dir)
        url = f"http://127.0.0.1:{settings.api_port}"
        try:
            key = await self.api_key(settings)
            await self.loadgen("closed", url, key, "--connections", "8", "--duration", "1")  # warm-up
            window = stack.CpuWindow({"api": api.pid, "tansu": self.broker.proc.pid}).start()
            single = await self.loadgen("closed", url, key, "--connections", "64", "--duration", str(duration))
            single["cpu_s"] = window.stop()
            window.start()
            batch = await self.loadgen("batch", url, key, "--connections", "4", "--duration", str(duration))
            batch["cpu_s"] = window.stop()
        finally:
            api.stop()
        return {"notif": single, "notif_batch": batch}

    # -- the run ---------------------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        args = self.args
        self.stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        record_bytes = len(encode(stack.requests(1, stack.users(1, ["sms"]), ["sms"])[0]))
        self.results.update(
            date=datetime.now(UTC).isoformat(timespec="seconds"),
            machine=machine(),
            partitions=args.partitions,
            simulator_latency_ms=0,
        )
        phases = set(args.phases.split(","))
        # The machine is shared and noisy: the ceiling and the main pipeline row are the
        # median of `--repeat` runs, interleaved so that both see the same conditions.
        ceilings, mains = [], []
        n = args.requests
        for i in range(args.repeat):
            if "ceiling" in phases:
                ceilings.append(await self.ceiling(args.ceiling_records, record_bytes, 1))
            if "pipeline" in phases:
                mains.append(await self.pipeline(n, ["sms"], args.per_record, profile=args.profile and i == 0))
        if "ceiling" in phases:
            self.results["ceiling"] = {
                "single": median_of(ceilings, "records_per_s"),
                "batched": await self.ceiling(args.ceiling_records // args.per_record, record_bytes, args.per_record),
            }
        if "pipeline" in phases:
            self.results["pipeline"] = [
                median_of(mains, "deliveries_per_s"),
                await self.pipeline(n // 3, ["sms", "email", "fcm"], args.per_record),
                await self.pipeline(min(n, 5000), ["sms"], 1),
            ]
        if "latency" in phases:
            self.results["latency"] = await self.latency([200, 1000, 3000], args.duration)
        if "ingest" in phases:
            self.results["ingest"] = await self.ingest(args.duration)
        if "campaign" in phases:
            self.results["campaign"] = await campaign.Phase(self).run()
        return self.results

    def close(self) -> None:
        self.sim.stop()


def median_of(runs: list[dict[str, Any]], key: str) -> dict[str, Any]:
    """The run with the median `key`, carrying every run's value of it."""
    ordered = sorted(runs, key=lambda r: r[key])
    return {**ordered[len(ordered) // 2], f"runs_{key}": [round(r[key]) for r in runs]}


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50_ms": None, "p90_ms": None, "p99_ms": None, "max_ms": None}

    def at(q: float) -> float:
        return round(values[min(len(values) - 1, int(q * len(values)))], 1)

    return {"p50_ms": round(statistics.median(values), 1), "p90_ms": at(0.9), "p99_ms": at(0.99), "max_ms": at(1.0)}


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor(),
    )
    return f"{platform.node()}, {os.cpu_count()} cores ({cpu}), Python {platform.python_version()}"


def run_values(row: dict[str, Any], key: str) -> str:
    return ", ".join(f"{v:,}" for v in row.get(f"runs_{key}", [round(row[key])]))


def table(r: dict[str, Any]) -> str:
    """The results as the Markdown table the README carries."""
    rows = [("stage", "result", "detail")]
    ceiling = r.get("ceiling", {})
    if ceiling:
        s, b = ceiling["single"], ceiling["batched"]
        rows.append(
            (
                "ceiling: bare aiokafka pass-through",
                f"{s['records_per_s']:,.0f} records/s",
                f"median of {run_values(s, 'records_per_s')}; {s['record_bytes']} B records (one request's size)",
            )
        )
        rows.append(
            (
                "ceiling, batch-sized records",
                f"{b['items_per_s']:,.0f} requests/s",
                f"{b['records_per_s']:,.0f} records/s of {b['record_bytes']:,} B",
            )
        )
    for p in r.get("pipeline", []):
        ratio = p["deliveries_per_s"] / ceiling["single"]["records_per_s"] if ceiling else float("nan")
        label = f"pipeline: {len(p['channels'])} channel(s), {p['requests_per_record']} request(s)/record"
        cpu = f"{p['worker_cpu_us_per_delivery']:.0f} µs worker"
        if p.get("sender_cpu_us_per_delivery"):
            cpu += f" + {p['sender_cpu_us_per_delivery']:.0f} µs sender"
        detail = f"{cpu} CPU/delivery; {ratio:.3f} of the ceiling"
        if "runs_deliveries_per_s" in p:
            detail += f"; median of {run_values(p, 'deliveries_per_s')}"
        rows.append((label, f"{p['deliveries_per_s']:,.0f} deliveries/s", detail))
    lat = r.get("latency")
    if lat:
        for label, runs in (("fresh", lat["fresh"]), ("search", lat["search"]), ("after growth", lat["after_growth"])):
            for row in runs:
                rows.append(
                    (
                        f"latency {row['offered_per_s']:,.0f}/s offered ({label})",
                        f"p50 {row['p50_ms']} / p90 {row['p90_ms']} / p99 {row['p99_ms']} / max {row['max_ms']} ms",
                        f"{row['accepted_per_s']:,.0f}/s accepted, {row['delivered']:,}/{row['accepted']:,} "
                        f"delivered, errors {row['errors'] or 0}",
                    )
                )
        rows.append(
            (
                "highest rate sustained (delivered, p99 < 1 s)",
                f"{lat['highest_sustained_per_s'] or 0:,.0f}/s",
                "POST /notif, one API process and one worker",
            )
        )
        grown = lat["grown"]
        rows.append(
            (
                "growth before 'after growth'",
                f"{grown['notifications']:,} notifications",
                f"through POST /notif/batch in {grown['seconds']:.0f} s",
            )
        )
        idle = lat["idle_cpu_percent"]
        rows.append(
            (
                "idle CPU (% of a core)",
                f"worker {idle['worker']}%",
                f"API {idle['api']}%, Tansu {idle['tansu']}%, simulator {idle['simulator']}%",
            )
        )
    ing = r.get("ingest")
    if ing:
        single, batch = ing["notif"], ing["notif_batch"]
        api_us = single["cpu_s"]["api"] / max(single["requests"], 1) * 1e6
        rows.append(
            (
                "ingest: POST /notif, 64 connections",
                f"{single['rps']:,.0f} requests/s",
                f"p50 {single['resp_p50_ms']} / p99 {single['resp_p99_ms']} ms, {api_us:.0f} µs API CPU each",
            )
        )
        rows.append(
            (
                "ingest: POST /notif/batch (1,000 each)",
                f"{batch['notifications_per_s']:,.0f} notifications/s",
                f"p50 {batch['resp_p50_ms']} / p99 {batch['resp_p99_ms']} ms per request",
            )
        )
    rows.extend(campaign.rows(r.get("campaign", {})))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = ["| " + " | ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)) + " |" for row in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> None:
    run_dir = Path(tempfile.mkdtemp(prefix="clarion-bench-"))
    with EmbeddedBroker() as broker, EmbeddedRedis() as redis:
        bench = Bench(args, broker, redis, run_dir)
        try:
            results = await bench.run()
        finally:
            bench.close()
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{bench.stamp}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nclarion bench, {results['date']}, {results['machine']}")
    print(f"embedded Tansu, {args.partitions} partitions, simulator at 0 ms; logs in {run_dir}\n")
    print(table(results))
    print(f"\nwritten to {path}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="make bench", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--phases", default="ceiling,pipeline,latency,ingest,campaign", help="comma-separated subset")
    parser.add_argument("--partitions", type=int, default=4, help="partitions of every topic (dev default: 4)")
    parser.add_argument("--requests", type=int, default=30_000, help="preloaded requests per pipeline run")
    parser.add_argument("--per-record", type=int, default=100, help="requests per record in the batched runs")
    parser.add_argument("--ceiling-records", type=int, default=100_000)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per latency rate and ingest run")
    parser.add_argument("--grow", type=int, default=100_000, help="notifications pushed before the last latency row")
    parser.add_argument("--repeat", type=int, default=3, help="runs of the ceiling and the main pipeline row")
    parser.add_argument("--profile", action="store_true", help="py-spy profile of the worker (speedscope JSON)")
    parser.add_argument("--campaign-users", type=int, default=100_000, help="users of each campaign (e.g. 1000000)")
    parser.add_argument("--campaign-channel", choices=["email", "sms"], default="email", help="the campaigns' channel")
    parser.add_argument("--campaign-rate", type=float, default=1000.0, help="critical POST /notif/s beside a campaign")
    parser.add_argument(
        "--campaign-lanes",
        choices=["all", "split"],
        default="all",
        help="fanout row: one `all` worker, or expansion in a `critical` worker and delivery in a `promo` one",
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
