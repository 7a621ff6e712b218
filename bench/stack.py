"""The processes a bench phase runs, each its own OS process, and how their CPU is read.

The broker, Redis, the provider simulator, the API and the worker each run in their own
process, so the CPU each spends is read from /proc without counting the others (or the
load generator, which is a process of its own too).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiokafka import AIOKafkaProducer

from clarion.schemas.codec import encode, encode_batch
from clarion.schemas.records import NotificationRequest, TemplateVersion, UserProfile
from clarion.topology import tansu
from clarion.topology.admin import ensure_topics
from clarion.topology.catalog import catalog
from clarion.topology.embedded import free_port, pointed_at_simulator, stop_process, wait_for_port
from clarion.topology.partitioning import by_partition
from clarion.topology.settings import Settings
from clarion.topology.worker import WorkerProcess, settings_env

TICKS = os.sysconf("SC_CLK_TCK")
CLIENT = "bench"
TEMPLATE = TemplateVersion(
    client_id=CLIENT,
    template_id="bench",
    version=1,
    email_subject="Code {{ n }}",
    email_text="Your code is {{ n }}",
    push_body="Your code is {{ n }}",
    sms_body="Your code is {{ n }}",
)


def cpu_seconds(pid: int) -> float:
    """user + system CPU a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def sender_of(worker_pid: int) -> int | None:
    """The worker's sender process (providers/sender.py), if it has started one."""
    for pid in Path(f"/proc/{worker_pid}/task/{worker_pid}/children").read_text().split():
        if b"clarion.providers.sender" in Path(f"/proc/{pid}/cmdline").read_bytes():
            return int(pid)
    return None


@dataclass
class CpuWindow:
    """CPU used by some processes between start() and stop()."""

    pids: dict[str, int]

    def start(self) -> CpuWindow:
        self.t0 = time.monotonic()
        self.c0 = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        return self

    def stop(self) -> dict[str, float]:
        """Seconds of CPU per process, and 'wall'."""
        out = {name: cpu_seconds(pid) - self.c0[name] for name, pid in self.pids.items()}
        out["wall"] = time.monotonic() - self.t0
        return out


class Child:
    """A child process started with `cmd`, logging to a file, stopped on exit."""

    def __init__(self, name: str, cmd: list[str], log_dir: Path, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self.proc = subprocess.Popen(
            cmd, env={**os.environ, **(env or {})}, stdout=self.log_path.open("ab"), stderr=subprocess.STDOUT
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        stop_process(self.proc)


def simulator(log_dir: Path) -> tuple[Child, str]:
    port = free_port()
    sim = Child("simulator", [sys.executable, "-m", "clarion.cli", "simulator", "--port", str(port)], log_dir)
    wait_for_port(port)
    return sim, f"http://127.0.0.1:{port}"


def settings_for(bootstrap: str, redis_url: str, sim_url: str, run_dir: Path, partitions: int) -> Settings:
    """A fresh topic prefix and consumer group on the shared broker, everything on loopback.

    Other settings come from CLARION_* variables (e.g. CLARION_SENDER=inline to compare).
    """
    name = "b" + uuid.uuid4().hex[:8]
    base = Settings.from_env(
        app_id=name,
        topic_prefix=name,
        redis=redis_url,
        critical_partitions=partitions,
        outcome_partitions=partitions,
        data_dir=str(run_dir / name),
        web_port=free_port(),
        api_port=free_port(),
    )
    return pointed_at_simulator(tansu.tuned(base, bootstrap), sim_url)


def api(settings: Settings, log_dir: Path) -> Child:
    env = settings_env(replace(settings, status_url=f"http://127.0.0.1:{settings.web_port}"))
    child = Child("api", [sys.executable, "-m", "clarion.cli", "api"], log_dir, env)
    wait_for_port(settings.api_port, timeout_s=30)
    return child


def worker(settings: Settings, log_dir: Path) -> WorkerProcess:
    return WorkerProcess(settings, log_dir / f"worker-{settings.app_id}.log").start()


async def sim_stats(http: aiohttp.ClientSession, sim_url: str) -> dict[str, Any]:
    async with http.get(f"{sim_url}/_sim/stats") as resp:
        return await resp.json()


async def wait_for_deliveries(sim_url: str, total: int, timeout_s: float, on_first: Any = None) -> dict[str, Any]:
    """Poll the simulator until it has `total` deliveries; calls on_first() at the first one."""
    deadline = time.monotonic() + timeout_s
    first_seen = False
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            stats = await sim_stats(http, sim_url)
            if stats["deliveries"] and not first_seen:
                first_seen = True
                if on_first is not None:
                    on_first()
            if stats["deliveries"] >= total:
                return stats
            await asyncio.sleep(0.02)
    raise TimeoutError(f"simulator has {stats['deliveries']} of {total} deliveries after {timeout_s}s")


async def wait_for_stage(worker_url: str, source: str, timeout_s: float) -> float:
    """Poll a worker's /stats until its `source` stage has taken an item; returns when (time.time())."""
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            try:
                async with http.get(f"{worker_url}/stats") as resp:
                    counters = (await resp.json())["counters"] if resp.status == 200 else {}
            except aiohttp.ClientError:
                counters = {}
            if counters.get(f"stage/{source}/items"):
                return time.time()
            await asyncio.sleep(0.005)
    raise TimeoutError(f"{source} took nothing in {timeout_s}s")


async def deliveries(sim_url: str, since: int = 0) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.get(f"{sim_url}/_sim/deliveries?since={since}") as resp:
        return orjson.loads(await resp.read())["deliveries"]


def user(i: int, channels: list[str]) -> UserProfile:
    """User u{i} with an address on every channel the bench uses."""
    return UserProfile(
        client_id=CLIENT,
        user_id=f"u{i}",
        email=f"u{i}@example.com" if "email" in channels else None,
        phone=f"+1415555{i:04d}" if "sms" in channels else None,
        fcm_tokens=[f"fcm-token-bench-{i:08d}"] if "fcm" in channels else [],
        apns_tokens=[f"{i:064x}"] if "apns" in channels else [],
    )


def users(n: int, channels: list[str]) -> list[UserProfile]:
    """u0..u{n-1} with an address on every channel the bench uses."""
    return [user(i, channels) for i in range(n)]


async def seed(settings: Settings, user_list: list[UserProfile]) -> None:
    """Create the topics, publish the bench template and the users."""
    specs = catalog(settings)
    await ensure_topics(settings.bootstrap_servers, list(specs.values()))
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, linger_ms=5)
    await producer.start()
    try:
        await producer.send_and_wait(specs["templates"].topic, encode(TEMPLATE), key=TEMPLATE.key.encode())
        sent = [await producer.send(specs["users"].topic, encode(u), key=u.key.encode()) for u in user_list]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


def requests(n: int, user_list: list[UserProfile], channels: list[str]) -> list[NotificationRequest]:
    run = uuid.uuid4().hex[:8]
    now = time.time()
    return [
        NotificationRequest(
            notification_id=f"n_{run}_{i}",
            client_id=CLIENT,
            idempotency_key=f"{run}-{i}",
            user_id=user_list[i % len(user_list)].user_id,
            channels=channels,
            template_id="bench",
            params={"n": i},
            accepted_at=now,
        )
        for i in range(n)
    ]


async def preload(settings: Settings, reqs: list[NotificationRequest], per_record: int) -> int:
    """Put requests on critical.requests, `per_record` per record (grouped by partition); returns records."""
    spec = catalog(settings)["critical.requests"]
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers, linger_ms=5, max_batch_size=1 << 20, max_request_size=4 << 20
    )
    await producer.start()
    records = 0
    try:
        futures = []
        for partition, group in by_partition(reqs, lambda r: r.user_key, spec.partitions).items():
            for start in range(0, len(group), per_record):
                chunk = group[start : start + per_record]
                value = encode(chunk[0]) if per_record == 1 else encode_batch(encode(r) for r in chunk)
                futures.append(
                    await producer.send(spec.topic, value, key=chunk[0].user_key.encode(), partition=partition)
                )
                records += 1
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return records
