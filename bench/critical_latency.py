"""POST /notif -> provider receipt latency on the embedded stack, sequential and in bursts.

Starts its own Tansu broker, Redis, simulator (0 ms latency), API and one worker, then
reports p50/p99 per phase. Numbers depend on the machine: compare runs, not absolutes.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web

from clarion.providers.simulator import start_simulator
from clarion.topology.embedded import EmbeddedBroker, EmbeddedRedis, free_port, pointed_at_simulator, tuned_for_tansu
from clarion.topology.settings import Settings
from clarion.topology.worker import WorkerProcess
from clarion.web.api import create_api


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def wait_receipt(sim, nid: str, timeout_s: float = 30) -> float:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for d in reversed(sim.state.deliveries):
            if d.get("nid") == nid:
                return d["at"]
        await asyncio.sleep(0.001)
    raise TimeoutError(nid)


async def main(sequential: int, burst: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="clarion-bench-"))
    with EmbeddedBroker() as broker, EmbeddedRedis() as redis:
        sim_port = free_port()
        sim, sim_runner = await start_simulator("127.0.0.1", sim_port)
        url = f"http://127.0.0.1:{sim_port}"
        s = Settings(
            redis=redis.url,
            critical_partitions=4,
            outcome_partitions=4,
            data_dir=str(tmp / "data"),
            web_port=free_port(),
            api_port=free_port(),
        )
        s = pointed_at_simulator(tuned_for_tansu(s, broker.bootstrap), url)
        runner = web.AppRunner(create_api(s), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", s.api_port).start()
        worker = WorkerProcess(s, tmp / "worker.log").start()
        api = f"http://127.0.0.1:{s.api_port}"
        try:
            async with aiohttp.ClientSession() as http:
                await http.post(f"{api}/template", json={"template_id": "b", "version": 1, "sms_body": "hi {{ n }}"})
                await http.post(f"{api}/users", json={"user_id": "u1", "phone": "+14155550100"})
                ready = await worker.wait_ready()
                await asyncio.sleep(1)

                async def one(i: int) -> tuple[float, float]:
                    body = {
                        "client_id": "bench",
                        "idempotency_key": f"k{i}-{time.time_ns()}",
                        "user_id": "u1",
                        "channels": ["sms"],
                        "template_id": "b",
                        "params": {"n": i},
                    }
                    t0 = time.time()
                    async with http.post(f"{api}/notif", json=body) as resp:
                        nid = (await resp.json())["notification_id"]
                    accepted = time.time() - t0
                    return accepted, await wait_receipt(sim, nid) - t0

                await one(-1)  # warm-up: connections, template compile
                seq = [await one(i) for i in range(sequential)]
                t0 = time.monotonic()
                burst_res = await asyncio.gather(*(one(10_000 + i) for i in range(burst)))
                burst_s = time.monotonic() - t0
        finally:
            worker.stop()
            await runner.cleanup()
            await sim_runner.cleanup()
    print(f"worker ready after {ready:.1f}s")
    for name, rows in (("sequential", seq), (f"burst of {burst}", burst_res)):
        post = [a * 1000 for a, _ in rows]
        e2e = [b * 1000 for _, b in rows]
        print(
            f"{name:>14}: n={len(rows)}  POST 202 p50={statistics.median(post):.1f}ms p99={pct(post, 0.99):.1f}ms"
            f"  POST->receipt p50={statistics.median(e2e):.1f}ms p99={pct(e2e, 0.99):.1f}ms"
        )
    print(f"burst throughput: {burst / burst_s:.0f} notifications/s end to end")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--sequential", type=int, default=30)
    parser.add_argument("--burst", type=int, default=200)
    args = parser.parse_args()
    asyncio.run(main(args.sequential, args.burst))
