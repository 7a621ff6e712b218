"""Headless Chromium driven over the Chrome DevTools Protocol, with aiohttp's websocket client.

Debian's `chromium` (installed by `make test`, see the Makefile) is started with
`--remote-debugging-port=0`; the port it picked is read from DevToolsActivePort in its
profile directory, and one page target is driven over its websocket: navigate, evaluate
JavaScript, wait for a condition, take a screenshot. JavaScript exceptions and console
errors on the page are collected, so a test can say the page ran clean.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp

CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")


def chromium_path() -> str:
    """The browser to drive: $CHROMIUM, else Debian's chromium; AssertionError naming the install step if none."""
    for path in (os.environ.get("CHROMIUM", ""), *CANDIDATES, shutil.which("chromium") or ""):
        if path and os.access(path, os.X_OK):
            return path
    raise AssertionError("no chromium: `make test` installs it (apt-get install chromium)")


class Page:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.ids = itertools.count(1)
        self.waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.errors: list[str] = []  # uncaught exceptions and console errors on the page
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            data = msg.json()
            if "id" in data:
                future = self.waiting.pop(data["id"], None)
                if future is not None and not future.done():
                    future.set_result(data)
            elif data.get("method") == "Runtime.exceptionThrown":
                details = data["params"]["exceptionDetails"]
                self.errors.append(details.get("exception", {}).get("description") or details.get("text", "?"))
            elif data.get("method") == "Runtime.consoleAPICalled" and data["params"]["type"] == "error":
                self.errors.append(" ".join(str(a.get("value", a.get("description"))) for a in data["params"]["args"]))
            elif data.get("method") == "Log.entryAdded" and data["params"]["entry"]["level"] == "error":
                entry = data["params"]["entry"]
                self.errors.append(f"{entry['text']} {entry.get('url', '')}".strip())
        for future in self.waiting.values():
            if not future.done():
                future.set_exception(ConnectionError("the browser closed the connection"))

    async def send(self, method: str, timeout_s: float = 10, **params: Any) -> dict[str, Any]:
        """One DevTools command; its result (AssertionError on a protocol error)."""
        ident = next(self.ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.waiting[ident] = future
        await self.ws.send_json({"id": ident, "method": method, "params": params})
        answer = await asyncio.wait_for(future, timeout_s)
        if "error" in answer:
            raise AssertionError(f"{method}: {answer['error']}")
        return answer["result"]

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression (awaited if a promise); AssertionError if it threw."""
        result = await self.send("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression!r} threw: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout_s: float = 15, what: str = "") -> Any:
        """Poll a JavaScript expression until it is truthy; its value."""
        deadline = time.monotonic() + timeout_s
        while True:
            value = await self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what or expression}; page errors: {self.errors}")
            await asyncio.sleep(0.1)

    async def goto(self, url: str) -> None:
        loaded = self.send("Page.navigate", url=url)
        await loaded
        await self.wait_for("document.readyState === 'complete'", what=f"{url} to load")

    async def screenshot(self) -> bytes:
        """The whole page, as PNG."""
        height = await self.evaluate("Math.ceil(document.documentElement.scrollHeight)")
        width = await self.evaluate("Math.ceil(document.documentElement.scrollWidth)")
        shot = await self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                               clip={"x": 0, "y": 0, "width": width, "height": height, "scale": 1})  # fmt: skip
        return base64.b64decode(shot["data"])


def launch(profile: Path, width: int, height: int) -> subprocess.Popen[bytes]:
    """Start a headless Chromium with a fresh profile in `profile` (its output goes to chromium.log there)."""
    profile.mkdir(parents=True, exist_ok=True)
    args = [chromium_path(), "--headless=new", "--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1",
            f"--user-data-dir={profile}", f"--window-size={width},{height}", "--no-first-run",
            "--no-default-browser-check", "--disable-gpu", "--disable-dev-shm-usage", "--disable-extensions",
            "--disable-background-networking", "--disable-sync", "--disable-component-update", "--mute-audio",
            "--hide-scrollbars", "--force-device-scale-factor=1", "about:blank"]  # fmt: skip
    if os.geteuid() == 0:
        args.insert(1, "--no-sandbox")  # Chromium refuses to run as root with its sandbox
    with (profile / "chromium.log").open("wb") as log:
        return subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


@contextlib.asynccontextmanager
async def chromium(profile: Path, width: int = 1440, height: int = 1000) -> Any:
    """A headless Chromium with one page, closed (and its processes ended) on exit."""
    proc = launch(profile, width, height)
    try:
        port = await _devtools_port(profile, proc)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/json/list") as resp:
                targets = await resp.json()
            target = next(t for t in targets if t["type"] == "page")
            async with http.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=64 * 1024 * 1024) as ws:
                page = Page(ws)
                await page.send("Page.enable")
                await page.send("Runtime.enable")
                await page.send("Log.enable")
                await page.send("Emulation.setDeviceMetricsOverride", width=width, height=height,
                                deviceScaleFactor=1, mobile=False)  # fmt: skip
                try:
                    yield page
                finally:
                    page.reader.cancel()
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """End the browser and the processes it started (its own session's group: its renderers, its GPU process)."""
    for sig, wait_s in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


async def _devtools_port(profile: Path, proc: subprocess.Popen[bytes], timeout_s: float = 20) -> int:
    marker = profile / "DevToolsActivePort"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"chromium exited {proc.returncode}: {(profile / 'chromium.log').read_text()[-2000:]}")
        if marker.exists():
            first = marker.read_text().split("\n", 1)[0].strip()
            if first.isdigit():
                return int(first)
        await asyncio.sleep(0.05)
    raise AssertionError("chromium did not open its DevTools port")
