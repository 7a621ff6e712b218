"""Run a faust worker for some settings as a child process (dev stack, tests, bench)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from dataclasses import fields
from pathlib import Path

import aiohttp

from clarion.topology.embedded import stop_process
from clarion.topology.settings import Settings

# uvloop: the worker spends most of its time in asyncio machinery; uvloop cut its CPU
# per delivery by ~10% in `make bench` (414 -> 371 µs). --quiet: faust prints nothing of its
# own (the text banner, the startup spinner, "-INT-" on a signal), so every line of the
# worker's output is a JSON log line (clarion/logs.py); logging is untouched by it.
WORKER_ARGS = ["-m", "faust", "--quiet", "--loop", "uvloop", "-A", "clarion.app", "worker", "-l", "info"]


def settings_env(settings: Settings) -> dict[str, str]:
    """CLARION_* variables that reproduce `settings` in a child process."""
    return {"CLARION_" + f.name.upper(): str(getattr(settings, f.name)) for f in fields(settings)}


class WorkerProcess:
    """`faust -A clarion.app worker` with the given settings, logging to a file."""

    def __init__(self, settings: Settings, log_path: Path) -> None:
        self.settings = settings
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        env = {**os.environ, **settings_env(self.settings)}
        cmd = [sys.executable, *WORKER_ARGS]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        return self

    @property
    def url(self) -> str:
        return f"http://{self.settings.web_host}:{self.settings.web_port}"

    async def wait_ready(self, timeout_s: float = 60.0) -> float:
        """Wait until the worker holds its partitions; returns the seconds waited."""
        start = time.monotonic()
        async with aiohttp.ClientSession() as http:
            while time.monotonic() - start < timeout_s:
                if self.proc is not None and self.proc.poll() is not None:
                    raise RuntimeError(f"worker exited with {self.proc.returncode}; see {self.log_path}")
                try:
                    async with http.get(self.url + "/ready") as resp:
                        if resp.status == 200:
                            return time.monotonic() - start
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.2)
        raise TimeoutError(f"worker not ready after {timeout_s}s; see {self.log_path}")

    def stop(self, timeout_s: float = 20.0) -> None:
        stop_process(self.proc, timeout_s)
