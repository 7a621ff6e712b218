"""`clarion api` and `clarion worker` started before their broker: each waits for it (every wait logged
in JSON), then serves; stopped while waiting, or after the broker went away, each exits 0 with JSON logs only."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import orjson
import pytest

from clarion.topology.embedded import EmbeddedBroker
from clarion.topology.worker import settings_env
from tests.conftest import test_settings

WAITING = "broker not reachable; waiting for it"


def start(
    command: str, broker: EmbeddedBroker, redis_url: str, tmp_path: Path
) -> tuple[subprocess.Popen[bytes], Path, int]:
    """`clarion <command>` (api | worker) on `broker`: the process, its log and the port its /ready is on."""
    settings = test_settings(broker, redis_url, "http://127.0.0.1:9", tmp_path)
    log_path = tmp_path / f"{command}.log"
    env = {**os.environ, **settings_env(settings)}
    proc = subprocess.Popen([sys.executable, "-m", "clarion.cli", command], env=env, stdout=log_path.open("wb"),
                            stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    return proc, log_path, settings.api_port if command == "api" else settings.web_port


def wait_for_line(log_path: Path, text: str, proc: subprocess.Popen[bytes], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while text not in log_path.read_text():
        assert proc.poll() is None, f"the API exited ({proc.returncode}):\n{log_path.read_text()[-2000:]}"
        assert time.monotonic() < deadline, f"never logged {text!r}:\n{log_path.read_text()[-2000:]}"
        time.sleep(0.05)


def stopped(proc: subprocess.Popen[bytes], log_path: Path) -> list[dict[str, object]]:
    """SIGTERM; the exit code is 0 and every line logged is a JSON object (no traceback): those lines."""
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0, log_path.read_text()[-3000:]
    lines = log_path.read_text().splitlines()
    assert all(line.startswith("{") for line in lines), "\n".join(line for line in lines if not line.startswith("{"))
    return [orjson.loads(line) for line in lines]


async def ready_status(port: int) -> int:
    try:
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/ready") as resp:
            return resp.status
    except aiohttp.ClientError:
        return 0


@pytest.mark.parametrize("command", ["api", "worker"])
async def test_it_waits_for_a_broker_started_after_it(command: str, redis_server, tmp_path: Path) -> None:
    broker = EmbeddedBroker()  # its port is chosen; nothing listens there yet
    proc, log_path, port = start(command, broker, redis_server.url, tmp_path)
    try:
        wait_for_line(log_path, WAITING, proc)
        with broker:
            deadline = time.monotonic() + 60
            while (status := await ready_status(port)) != 200:
                assert time.monotonic() < deadline, f"/ready answered {status}:\n{log_path.read_text()[-2000:]}"
                await asyncio.sleep(0.1)
        records = stopped(proc, log_path)  # the broker is gone again: the API still stops cleanly
    finally:
        if proc.poll() is None:
            proc.kill()
    waits = [r for r in records if r["msg"] == WAITING]
    assert waits and waits[0]["bootstrap"] == broker.bootstrap and waits[0]["attempt"] == 1


@pytest.mark.parametrize("command", ["api", "worker"])
def test_stopped_while_waiting_for_its_broker_it_exits_cleanly(command: str, redis_server, tmp_path: Path) -> None:
    proc, log_path, _ = start(command, EmbeddedBroker(), redis_server.url, tmp_path)
    try:
        wait_for_line(log_path, WAITING, proc)
        assert any(r["msg"] == WAITING for r in stopped(proc, log_path))
    finally:
        if proc.poll() is None:
            proc.kill()
