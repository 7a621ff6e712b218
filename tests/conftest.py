"""Shared fixtures: one real Tansu broker and one real Redis per test session."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from clarion.providers.simulator import Simulator, start_simulator
from clarion.topology import tansu
from clarion.topology.embedded import (
    EmbeddedBroker,
    EmbeddedRedis,
    free_port,
    pointed_at_simulator,
)
from clarion.topology.settings import Settings


@pytest.fixture(scope="session")
def broker() -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker() as b:
        yield b


@pytest.fixture(scope="session")
def redis_server() -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis() as r:
        yield r


@pytest.fixture
async def simulator() -> AsyncIterator[tuple[Simulator, str]]:
    port = free_port()
    sim, runner = await start_simulator("127.0.0.1", port)
    yield sim, f"http://127.0.0.1:{port}"
    await runner.cleanup()


def test_settings(
    broker: EmbeddedBroker, redis_url: str, sim_url: str, tmp_path: Path, **overrides: object
) -> Settings:
    """Settings for one isolated test: its own app id, topic prefix, ports and data dir."""
    name = "t" + uuid.uuid4().hex[:10]
    base = Settings(
        app_id=name,
        topic_prefix=name,
        redis=redis_url,
        critical_partitions=2,
        outcome_partitions=2,
        retry_base_delay_s=0.2,
        retry_max_delay_s=1.0,
        max_attempts=3,
        deliver_concurrency=4,
        data_dir=str(tmp_path / "data"),
        web_port=free_port(),
        api_port=free_port(),
    )
    base = pointed_at_simulator(tansu.tuned(base, broker.bootstrap), sim_url)
    return replace(base, **overrides)


test_settings.__test__ = False  # a helper, not a test


def run_clarion(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """`clarion <args>` in a child process with `settings` in its environment (a CLI test)."""
    from clarion.topology.worker import settings_env

    env = {**os.environ, **settings_env(settings)}
    return subprocess.run([sys.executable, "-m", "clarion.cli", *args], env=env, capture_output=True,
                          text=True, timeout=60)  # fmt: skip


NEEDS_INFRA = {"broker", "redis_server", "redis_url"}  # fixtures that start a real broker or Redis


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "infra: needs the embedded broker or Redis (make test-fast leaves these out)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if NEEDS_INFRA & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.infra)
