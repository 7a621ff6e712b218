"""A real API + worker + simulator on the session's broker and Redis, driven over HTTP with API keys."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest_asyncio
from aiohttp import web
from yarl import URL

from clarion.keys import create_key
from clarion.providers.simulator import start_simulator
from clarion.tables.api_keys import SCOPES
from clarion.topology.embedded import free_port
from clarion.topology.worker import WorkerProcess
from clarion.web.api import create_api
from tests.conftest import test_settings

CLIENT = "web"
TEMPLATE = {
    "template_id": "otp",
    "version": 1,
    "email_subject": "Code",
    "email_text": "Your code: {{ code }}",
    "sms_body": "Code {{ code }}",
}
USER = {"user_id": "alice", "email": "alice@example.com", "phone": "+14155550100"}


class Stack:
    def __init__(self, url: str, http: aiohttp.ClientSession, sim: Any, settings: Any, key: str) -> None:
        self.url, self.http, self.sim, self.settings, self.key = url, http, sim, settings, key

    def auth(self, key: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"} if key else {}

    async def call(
        self, method: str, path: str, body: Any = None, raw: bytes | None = None, key: str | None = ""
    ) -> tuple[int, Any]:
        """One request with this stack's key (`key=None`: none; another string: that key)."""
        kwargs: dict[str, Any] = {"data": raw} if raw is not None else {"json": body}
        headers = self.auth(self.key if key == "" else key)
        # encoded: the path goes out as written ("..%2F" stays, "/../" is not folded by the client)
        async with self.http.request(method, URL(self.url + path, encoded=True), headers=headers, **kwargs) as resp:
            return resp.status, await resp.json(content_type=None)

    async def worker_page(self, path: str, key: str | None = "") -> tuple[int, Any]:
        url = URL(f"http://127.0.0.1:{self.settings.web_port}{path}", encoded=True)
        async with self.http.get(url, headers=self.auth(self.key if key == "" else key)) as resp:
            return resp.status, await resp.json(content_type=None)

    async def new_key(self, client_id: str, scopes: list[str] | None = None) -> str:
        key, _ = await create_key(self.settings, client_id, scopes or list(SCOPES))
        return key

    def notif(self, **kw: Any) -> dict[str, Any]:
        return {
            "idempotency_key": f"k-{time.monotonic_ns()}",
            "user_id": "alice",
            "channels": ["email"],
            "template_id": "otp",
            "params": {"code": "1234"},
            **kw,
        }

    async def wait_worker_template(self, template_id: str, latest: int, timeout_s: float = 10) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            status, body = await self.worker_page(f"/templates/{template_id}/")
            if status == 200 and body["latest"] == latest:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"worker never held {template_id}@{latest}")

    async def wait_status(self, nid: str, want: set[str], timeout_s: float = 30, key: str = "") -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            status, body = await self.call("GET", f"/notif/{nid}", key=key)
            if status == 200 and body["status"] in want:
                return body
            if time.monotonic() > deadline:
                raise AssertionError(f"{nid} still {status} {body}")
            await asyncio.sleep(0.1)


def api_stack_fixture(**overrides: Any) -> Any:
    """A module-scoped `stack` fixture: client "web" with a key of every scope, template otp@1, user alice."""

    @pytest_asyncio.fixture(scope="module", loop_scope="module")
    async def stack(broker, redis_server, tmp_path_factory) -> AsyncIterator[Stack]:
        tmp = Path(tmp_path_factory.mktemp("http"))
        sim_port = free_port()
        sim, sim_runner = await start_simulator("127.0.0.1", sim_port)
        settings = test_settings(
            broker, redis_server.url, f"http://127.0.0.1:{sim_port}", tmp, **{"max_request_bytes": 4096, **overrides}
        )
        runner = web.AppRunner(create_api(settings), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", settings.api_port).start()
        worker = WorkerProcess(settings, tmp / "worker.log").start()
        key, _ = await create_key(settings, CLIENT, list(SCOPES))  # after the API started: it must pick it up
        async with aiohttp.ClientSession() as http:
            s = Stack(f"http://127.0.0.1:{settings.api_port}", http, sim, settings, key)
            got = await s.call("POST", "/template", TEMPLATE)
            assert got[0] == 201, got
            assert (await s.call("POST", "/users", USER))[0] == 202
            await worker.wait_ready()
            yield s
        worker.stop()
        await runner.cleanup()
        await sim_runner.cleanup()

    return stack
