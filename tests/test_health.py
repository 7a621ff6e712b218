"""Health that means something: /ready says what it checked, logs are JSON only, an access log
line per request (and none with CLARION_ACCESS_LOG=0), `clarion --version` and documented options."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import subprocess
import sys
from dataclasses import replace
from importlib.metadata import version
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from clarion import cli
from clarion.keys import create_key
from clarion.logs import JsonFormatter
from clarion.topology.embedded import EmbeddedBroker, free_port, stop_process, wait_for_port
from clarion.topology.worker import WorkerProcess, settings_env
from clarion.web.api import create_api
from clarion.web.context import PRODUCER_PROBE
from tests.api_stack import Stack, api_stack_fixture
from tests.conftest import test_settings

stack = api_stack_fixture()
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def json_lines(path: Path) -> list[dict[str, Any]]:
    """Every line of a log file, each of which must be one JSON object."""
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    parsed = []
    for line in lines:
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError:
            raise AssertionError(f"{path.name} has a line that is not JSON: {line[:200]!r}") from None
        assert isinstance(value, dict), line
        parsed.append(value)
    return parsed


@pytest.mark.asyncio(loop_scope="module")
async def test_ready_says_what_it_checked(stack: Stack) -> None:
    status, body = await stack.call("GET", "/ready", key=None)
    assert status == 200 and body["ready"] is True
    checks = body["checks"]
    assert set(checks) == {"producer", "templates", "api_keys"}
    assert checks["producer"]["ok"] is True and checks["producer"]["brokers"] == 1
    assert checks["templates"]["ok"] is True and checks["templates"]["entries"] >= 1  # otp@1 (and its @latest)
    assert checks["api_keys"]["ok"] is True and checks["api_keys"]["entries"] >= 1


@pytest.mark.asyncio(loop_scope="module")
async def test_healthz_is_cheap_json(stack: Stack) -> None:
    status, body = await stack.call("GET", "/healthz", key=None)
    assert status == 200 and body["ok"] is True and body["checks"]["process"]["ok"] is True


@pytest.mark.asyncio(loop_scope="module")
async def test_the_access_line_carries_the_answers_trace_id(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="clarion.access")
    status, body = await stack.call("POST", "/notif", stack.notif())  # no traceparent: the API makes the id
    assert status == 202
    (line,) = [r for r in caplog.records if r.name == "clarion.access" and r.fields["route"] == "/notif"]
    assert line.levelno == logging.INFO
    assert {k: line.fields[k] for k in ("method", "status", "client_id", "trace_id")} == {
        "method": "POST", "status": 202, "client_id": "web", "trace_id": body["trace_id"]}  # fmt: skip
    formatted = orjson.loads(JsonFormatter().format(line))  # as the API's log prints it
    assert formatted["route"] == "/notif" and formatted["msg"] == "request"


async def ready_status(http: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, Any]]:
    async with http.get(url) as resp:
        return resp.status, await resp.json()


async def test_ready_is_503_while_the_broker_does_not_answer(redis_server: Any, tmp_path: Path) -> None:
    with EmbeddedBroker() as own:  # a broker of its own, to freeze and thaw
        settings = test_settings(own, redis_server.url, "http://127.0.0.1:9", tmp_path)
        runner = web.AppRunner(create_api(settings))
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", settings.api_port).start()
        runner.app[PRODUCER_PROBE].ttl_s = 0  # ask the broker at every /ready
        url = f"http://127.0.0.1:{settings.api_port}/ready"
        assert own.proc is not None
        try:
            async with aiohttp.ClientSession() as http:
                status, body = await ready_status(http, url)
                assert status == 200 and body["checks"]["producer"] == {"ok": True, "brokers": 1, "checked_s_ago": 0.0}
                os.kill(own.proc.pid, signal.SIGSTOP)  # connections stay open, nothing answers
                # a metadata request answered just before the stop may still complete the next ask
                for _ in range(3):
                    status, body = await ready_status(http, url)
                    if status == 503:
                        break
                assert status == 503 and body["ready"] is False, body
                assert body["checks"]["producer"] == {
                    "ok": False, "error": "no broker answered a metadata request within 2 s", "checked_s_ago": 0.0}
                assert body["checks"]["templates"]["ok"] is True  # what it has read is still there
                os.kill(own.proc.pid, signal.SIGCONT)
                for _ in range(50):
                    status, body = await ready_status(http, url)
                    if status == 200:
                        break
                    await asyncio.sleep(0.2)
                assert status == 200, body
        finally:
            os.kill(own.proc.pid, signal.SIGCONT)
            await asyncio.wait_for(runner.cleanup(), 30)


def run_api(settings: Any, log_path: Path, **env: str) -> subprocess.Popen[bytes]:
    """`clarion api` in a child process, its output (stdout and stderr) to `log_path`."""
    log = log_path.open("ab")
    environ = {**os.environ, **settings_env(settings), **env}
    proc = subprocess.Popen([sys.executable, "-m", "clarion.cli", "api"], env=environ, stdout=log, stderr=log)
    log.close()
    return proc


async def test_access_log_lines_and_their_setting(broker: Any, redis_server: Any, tmp_path: Path) -> None:
    base = test_settings(broker, redis_server.url, "http://127.0.0.1:9", tmp_path)
    key, _ = await create_key(base, "ops", ["metrics"])
    logs = {}
    for access_log in ("1", "0"):
        settings = replace(base, api_port=free_port())
        logs[access_log] = tmp_path / f"api-{access_log}.log"
        proc = run_api(settings, logs[access_log], CLARION_ACCESS_LOG=access_log)
        try:
            await asyncio.to_thread(wait_for_port, settings.api_port, 60)
            api = f"http://127.0.0.1:{settings.api_port}"
            async with aiohttp.ClientSession() as http:
                headers = {"Authorization": f"Bearer {key}", "traceparent": f"00-{TRACE}-00f067aa0ba902b7-01"}
                async with http.get(api + "/metrics", headers=headers) as resp:
                    assert resp.status == 200
                async with http.get(api + "/no/such/page") as resp:
                    assert resp.status == 404
        finally:
            stop_process(proc)

    lines = json_lines(logs["1"])  # every line JSON: no "Running on ..." banner either
    access = [line for line in lines if line["logger"] == "clarion.access"]
    assert len(access) == 2, access
    scraped, missing = access
    assert scraped["level"] == "info" and scraped["msg"] == "request"
    assert {k: scraped[k] for k in ("method", "route", "status", "client_id", "trace_id")} == {
        "method": "GET", "route": "/metrics", "status": 200, "client_id": "ops", "trace_id": TRACE}  # fmt: skip
    assert isinstance(scraped["duration_ms"], float) and scraped["duration_ms"] > 0
    assert (missing["route"], missing["status"], missing["client_id"]) == ("unmatched", 404, "")
    quiet = json_lines(logs["0"])
    assert quiet and not [line for line in quiet if line["logger"] == "clarion.access"]


async def test_worker_log_is_json_only(broker: Any, redis_server: Any, tmp_path: Path) -> None:
    settings = test_settings(broker, redis_server.url, "http://127.0.0.1:9", tmp_path)
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    try:
        await worker.wait_ready()
    finally:
        await asyncio.to_thread(worker.stop)  # its shutdown's lines too
    lines = json_lines(worker.log_path)
    assert len(lines) > 50 and any(line["logger"] == "faust.worker" for line in lines)
    assert any(line["logger"] == "clarion.sender" for line in lines)  # its sender process was started


def test_version() -> None:
    out = subprocess.run([sys.executable, "-m", "clarion.cli", "--version"], capture_output=True, text=True,
                         timeout=60)  # fmt: skip
    assert out.returncode == 0 and out.stdout.strip() == f"clarion {version('clarion')}"


def parsers(parser: argparse.ArgumentParser, path: str = "clarion") -> list[tuple[str, argparse.ArgumentParser]]:
    found = [(path, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                found += parsers(child, f"{path} {name}")
    return found


def test_every_option_of_every_command_is_documented(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[argparse.ArgumentParser] = []

    def capture(self: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        built.append(self)
        raise SystemExit(0)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", capture)
    with pytest.raises(SystemExit):
        cli.main([])
    commands = parsers(built[0])
    assert {path for path, _ in commands} >= {"clarion dev", "clarion keys create", "clarion dlq replay"}
    for path, parser in commands:
        assert parser.description, f"{path} --help has no description"
        for action in parser._actions:
            if not isinstance(action, argparse._SubParsersAction):
                assert action.help and action.help != argparse.SUPPRESS, f"{path}: {action.dest} is undocumented"
