"""`clarion dev`: the whole stack on loopback, a demo, and then the API until Ctrl-C."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from aiohttp import web

from clarion.demo import run_demo, run_promo_demo
from clarion.keys import create_key
from clarion.providers.simulator import fcm, ses, start_simulator
from clarion.tables.api_keys import SCOPES
from clarion.topology import tansu
from clarion.topology.embedded import (
    EmbeddedBroker,
    EmbeddedRedis,
    MissingDevExtra,
    free_port,
    pointed_at_simulator,
    require_embedded,
)
from clarion.topology.settings import Settings
from clarion.topology.worker import WorkerProcess
from clarion.web.api import create_api

DEMO_CLIENT = "demo"


def dev_settings(base: Settings, bootstrap: str | None, redis: str, sim_url: str, run_dir: Path) -> Settings:
    """Small partition counts for one machine, the simulator, and Tansu's needs when embedded."""
    settings = replace(
        base,
        redis=redis,
        critical_partitions=min(base.critical_partitions, 4),
        outcome_partitions=min(base.outcome_partitions, 4),
        retry_base_delay_s=1.0,
        retry_max_delay_s=60.0,
        data_dir=str(run_dir / "data"),
        web_port=free_port() if base.web_port == Settings.web_port else base.web_port,
    )
    if bootstrap is not None:
        settings = tansu.tuned(settings, bootstrap)
    return pointed_at_simulator(settings, sim_url)


async def run_dev(
    base: Settings | None = None, demo: bool = True, linger: bool = True, callbacks: bool = False
) -> None:
    base = base or Settings.from_env()
    try:
        require_embedded(base)  # before anything starts: the production image has no dev extra
    except MissingDevExtra as exc:
        raise SystemExit(f"clarion dev: {exc}") from None
    started = time.monotonic()
    run_dir = Path(tempfile.mkdtemp(prefix="clarion-dev-"))
    with contextlib.ExitStack() as stack:
        broker = redis = None
        if not base.kafka:
            broker = stack.enter_context(EmbeddedBroker())
            print(f"embedded Tansu broker on {broker.bootstrap}")
            print(tansu.BANNER)
        if not base.redis:
            redis = stack.enter_context(EmbeddedRedis())
            print(f"embedded Redis on {redis.url}")
        sim_port = free_port()
        fcm_bearer = base.fcm_bearer or fcm.STATIC_BEARER  # what pointed_at_simulator gives the worker
        sim, sim_runner = await start_simulator(
            "127.0.0.1", sim_port, latency_ms=5, fcm_bearer=fcm_bearer, **ses.options(base)
        )
        settings = dev_settings(
            base, broker.bootstrap if broker else None, base.redis or redis.url, f"http://127.0.0.1:{sim_port}", run_dir
        )
        print(f"provider simulator on http://127.0.0.1:{sim_port}")
        worker = WorkerProcess(settings, run_dir / "worker.log").start()
        stack.callback(worker.stop)
        api_runner = web.AppRunner(create_api(settings), access_log=None)
        await api_runner.setup()
        await web.TCPSite(api_runner, settings.api_host, settings.api_port).start()
        api_url = f"http://{settings.api_host}:{settings.api_port}"
        if callbacks:  # feedback flows back: statuses turn delivered/undelivered/bounced
            sim.callbacks.enable(sns_endpoint=f"{settings.webhook_base_url}/webhooks/ses")
            print(f"simulator callbacks on: Twilio to {settings.status_callback_url}, SES events via SNS to the API")
        print(f"API on {api_url} (worker web {worker.url}, logs {worker.log_path})")
        api_key, _ = await create_key(settings, DEMO_CLIENT, list(SCOPES), name="clarion dev")
        print(f"api key: {api_key}")
        print(f"(client {DEMO_CLIENT!r}; more with  CLARION_KAFKA={settings.kafka} "
              f"CLARION_BROKER_QUIRKS={settings.broker_quirks} clarion keys create CLIENT_ID)")  # fmt: skip
        waited = await worker.wait_ready()
        print(f"worker ready after {waited:.1f}s")
        try:
            if demo:
                await run_demo(api_url, sim, api_key)
                await run_promo_demo(api_url, sim, api_key)
                print(f"demo done {time.monotonic() - started:.1f}s after start")
            if linger:
                auth = f"-H 'Authorization: Bearer {api_key}'"
                print(f"serving: try  curl -s {auth} {api_url}/notif/<id>   (Ctrl-C stops everything)")
                await _until_signal()
        finally:
            await api_runner.cleanup()
            await sim_runner.cleanup()


async def _until_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
