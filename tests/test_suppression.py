"""Suppression: a dead push token is not sent to again, until a profile upsert adds it anew."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.conftest import test_settings
from tests.replay_harness import Replayer, Scenario

DEAD_APNS, LIVE_APNS, DEAD_FCM = "a" * 64, "b" * 64, "fcm-token-dead-0123456789"
TEMPLATE = {"client_id": "c", "template_id": "w", "version": 1, "push_title": "Hi", "push_body": "{{ n }}"}


def user(apns: list[str], fcm: list[str]) -> dict[str, Any]:
    profile = {"client_id": "c", "user_id": "u1", "apns_tokens": apns, "fcm_tokens": fcm}
    return {"input": "users", "key": "c/u1", "value": profile}


def request(n: int) -> dict[str, Any]:
    value = {"notification_id": f"n{n}", "client_id": "c", "idempotency_key": f"k{n}", "user_id": "u1",
             "channels": ["apns", "fcm"], "template_id": "w", "params": {"n": n}}  # fmt: skip
    return {"input": "critical.requests", "key": "c/u1", "value": value}


async def test_dead_tokens_are_suppressed_until_added_anew(broker, redis_server, simulator, tmp_path: Path) -> None:
    sim, sim_url = simulator
    settings = test_settings(broker, redis_server.url, sim_url, tmp_path)
    replayer = Replayer(settings, sim)
    await replayer.prepare()
    steps: list[dict[str, Any]] = [
        {"input": "templates", "key": "c/w@1", "value": TEMPLATE},
        user([DEAD_APNS, LIVE_APNS], [DEAD_FCM]),
        {"fault": {"channel": "apns", "kind": "permanent", "address": DEAD_APNS, "times": 1}},  # 410 Unregistered
        {"fault": {"channel": "fcm", "kind": "permanent", "address": DEAD_FCM, "times": 1}},  # 404 UNREGISTERED
        {"barrier": {"users": 1, "templates": 1}},
        request(1),
        {"barrier": {"suppressed_addresses": 2}},  # the deliver stage heard both answers
        request(2),  # neither dead token is tried
        user([LIVE_APNS], []),  # the app was uninstalled on those devices...
        user([LIVE_APNS, DEAD_APNS], [DEAD_FCM]),  # ...and installed again: the tokens are added anew
        {"tombstones": {"suppressed": 1}},
        request(3),
    ]
    scenario = Scenario(steps=steps)
    scenario.expected["outcomes"] = [{}] * 12  # collect until this many have come, then a little longer
    got = await replayer.through_worker(scenario, tmp_path / "worker.log")

    seen = sorted((o["notification_id"], o["status"], o["channel"] or "") for o in got["outcomes"])
    assert seen == sorted([
        ("n1", "accepted", ""), ("n1", "failed", "apns"), ("n1", "sent", "apns"), ("n1", "failed", "fcm"),
        ("n2", "accepted", ""), ("n2", "suppressed", "apns"), ("n2", "sent", "apns"), ("n2", "suppressed", "fcm"),
        ("n3", "accepted", ""), ("n3", "sent", "apns"), ("n3", "sent", "apns"), ("n3", "sent", "fcm"),
    ])  # fmt: skip
    reasons = [o["reason"] for o in got["outcomes"] if o["status"] == "suppressed"]
    assert all(r.startswith("suppressed: ") for r in reasons) and len(reasons) == 2
    receipts = sorted((d["nid"], d["address"]) for d in sim.state.deliveries)
    assert receipts == sorted([("n1", LIVE_APNS), ("n2", LIVE_APNS), ("n3", LIVE_APNS), ("n3", DEAD_APNS),
                               ("n3", DEAD_FCM)])  # fmt: skip
