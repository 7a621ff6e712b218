"""`clarion worker --lanes critical|promo|all`: what each runs, and the lanes in two processes."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from clarion.schemas.channels import CHANNELS
from clarion.topology.app import create_app
from clarion.topology.catalog import catalog
from clarion.topology.embedded import free_port
from clarion.topology.settings import Settings
from clarion.topology.worker import WorkerProcess, settings_env
from tests.api_stack import Stack, api_stack_fixture
from tests.drain import committed_to_end

stack = api_stack_fixture(lanes="critical", promo_partitions=2, promo_tick_s=0.05)

SALE = {"template_id": "sale", "version": 1, "email_subject": "Sale", "email_text": "{{ pct }}% off"}


def agents_of(lanes: str) -> set[str]:
    """The agents a worker with these lanes registers (no broker needed; the faust CLI's own
    listing of them is tests/test_faust_cli.py's)."""
    with tempfile.TemporaryDirectory() as data_dir:
        app, _ = create_app(Settings(kafka="127.0.0.1:1", lanes=lanes, data_dir=data_dir))
        return set(app.agents)


def test_each_choice_registers_its_agents() -> None:
    critical_lanes = {f"clarion.deliver.critical.{ch}" for ch in CHANNELS}
    promo_lanes = {f"clarion.deliver.promo.{ch}" for ch in CHANNELS}
    campaigns = {"clarion.promo.schedule", "clarion.promo.fanout"}
    promo = agents_of("promo")
    assert {a for a in promo if a.startswith("clarion.deliver.")} == promo_lanes
    assert promo - promo_lanes == {a for a in promo if a.startswith("clarion.promo.retry.")} != set()
    critical = agents_of("critical")
    stages = {"clarion.users.table", "clarion.critical.dedupe_route", "clarion.feedback"}
    assert critical_lanes | campaigns | stages <= critical
    assert not {a for a in critical if a.startswith(("clarion.deliver.promo.", "clarion.promo.retry."))}
    assert agents_of("all") == promo | critical


def test_an_unknown_choice_is_refused() -> None:
    done = subprocess.run([sys.executable, "-m", "clarion.cli", "worker", "--lanes", "bulk"], capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode == 2 and "--lanes" in done.stderr
    env = {**os.environ, **settings_env(Settings(kafka="127.0.0.1:1", lanes="bulk"))}
    done = subprocess.run([sys.executable, "-m", "faust", "-A", "clarion.app", "agents"], env=env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode != 0 and "CLARION_LANES is 'bulk': one of all, critical, promo" in done.stderr


class CliWorker(WorkerProcess):
    """`clarion worker --lanes <lanes>`, the operator's command, with `settings` in its environment."""

    def __init__(self, settings: Settings, log_path: Path, lanes: str) -> None:
        super().__init__(settings, log_path)
        self.lanes = lanes

    def start(self) -> CliWorker:
        env = {**os.environ, **settings_env(self.settings)}
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        cmd = [sys.executable, "-m", "clarion.cli", "worker", "--lanes", self.lanes]
        self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        return self


async def consumed(settings: Settings, groups: list[str]) -> dict[str, set[str]]:
    """Which of the critical and promo email lanes each group committed, once both are consumed to their end."""
    specs = catalog(settings)
    names = ["critical.email", "promo.email"]
    commits = await committed_to_end(settings, groups, [specs[n] for n in names])
    return {
        group: {n for n in names if any(o > 0 for tp, o in got.items() if tp.topic == specs[n].topic)}
        for group, got in commits.items()
    }


@pytest.mark.asyncio(loop_scope="module")
async def test_a_critical_and_a_promo_worker_deliver_both_lanes(stack: Stack, tmp_path: Path) -> None:
    # the stack's worker runs --lanes critical; a second process, started the operator's way, the promo lanes
    env = replace(stack.settings, web_port=free_port(), data_dir=str(tmp_path / "data-promo"))  # lanes: critical
    promo = CliWorker(env, tmp_path / "promo.log", "promo").start()  # --lanes wins over CLARION_LANES
    try:
        await promo.wait_ready()
        assert (await stack.call("POST", "/template", SALE))[0] == 201
        users = [{"user_id": f"l{i}", "email": f"l{i}@lanes.example"} for i in range(20)]
        for user in users:
            assert (await stack.call("POST", "/users", user))[0] == 202
        status, body = await stack.call("POST", "/notif", stack.notif())
        assert status == 202, body
        nid = body["notification_id"]
        assert (await stack.wait_status(nid, {"sent"}))["status"] == "sent"
        before = len(stack.sim.state.deliveries)
        status, body = await stack.call("POST", "/promo", {
            "campaign_id": "split", "template_id": "sale", "channels": ["email"], "params": {"pct": 10},
            "audience": {"all": True},
        })  # fmt: skip
        assert status == 202, body
        done = await wait_campaign(stack, "split")
        got = [r["address"] for r in stack.sim.state.deliveries[before:] if r["address"].endswith("@lanes.example")]
        assert sorted(got) == sorted(u["email"] for u in users)
        assert done["counters"]["sent"] == 21  # and alice, the stack's user
        # who consumed what: the promo lanes by the promo workers' group only, the critical lanes by the main one
        main, promo_group = stack.settings.app_id, f"{stack.settings.app_id}-promo"
        lanes_by_group = await consumed(stack.settings, [main, promo_group])
        assert lanes_by_group == {main: {"critical.email"}, promo_group: {"promo.email"}}
        # the promo worker holds no statuses: it says so instead of answering "unknown"
        async with stack.http.get(f"{promo.url}/status/{nid}/", headers=stack.auth(stack.key)) as resp:
            assert resp.status == 503 and "promo lanes only" in (await resp.json())["error"]
    finally:
        promo.stop()


async def wait_campaign(stack: Stack, campaign_id: str, timeout_s: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    body: Any = None
    while time.monotonic() < deadline:
        status, body = await stack.call("GET", f"/promo/{campaign_id}")
        if status == 200 and body["state"] == "done":
            return body
        await asyncio.sleep(0.2)
    raise AssertionError(f"campaign {campaign_id} never done: {body}")
