"""Suppression: a dead push token is not sent to again and leaves the profile, until an upsert adds it anew."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import msgspec
import orjson

from clarion.agents.route import plan
from clarion.schemas.codec import decode, encode
from clarion.schemas.records import NotificationRequest, TemplateVersion, UserProfile
from clarion.tables.suppression import SuppressionBook
from clarion.topology.worker import WorkerProcess
from tests.conftest import test_settings
from tests.replay_harness import Replayer, Scenario, changelog_state

DEAD_APNS, LIVE_APNS, DEAD_FCM = "a" * 64, "b" * 64, "fcm-token-dead-0123456789"
TEMPLATE = {"client_id": "c", "template_id": "w", "version": 1, "push_title": "Hi", "push_body": "{{ n }}"}


def user(apns: list[str], fcm: list[str]) -> dict[str, Any]:
    profile = {"client_id": "c", "user_id": "u1", "apns_tokens": apns, "fcm_tokens": fcm}
    return {"input": "users", "key": "c/u1", "value": profile}


def request(n: int) -> dict[str, Any]:
    value = {"notification_id": f"n{n}", "client_id": "c", "idempotency_key": f"k{n}", "user_id": "u1",
             "channels": ["apns", "fcm"], "template_id": "w", "params": {"n": n}}  # fmt: skip
    return {"input": "critical.requests", "key": "c/u1", "value": value}


async def stored_profile(replayer: Replayer, settings: Any, until: Any, timeout_s: float = 30.0) -> dict[str, Any]:
    """u1's profile on the worker's users changelog, once `until(profile)` holds (else the last one seen)."""
    deadline = time.monotonic() + timeout_s
    while True:
        state = await changelog_state(replayer.bootstrap, f"{settings.app_id}-users-changelog")
        raw = state.get(b"c/u1")
        profile = orjson.loads(raw) if raw else {}
        if until(profile) or time.monotonic() > deadline:
            return profile
        await asyncio.sleep(0.2)


def tokens(profile: dict[str, Any]) -> tuple[list[str], list[str]]:
    return profile.get("apns_tokens", []), profile.get("fcm_tokens", [])


async def test_dead_tokens_are_suppressed_and_removed_until_added_anew(
    broker, redis_server, simulator, tmp_path: Path
) -> None:
    sim, sim_url = simulator
    settings = test_settings(broker, redis_server.url, sim_url, tmp_path)
    replayer = Replayer(settings, sim)
    await replayer.prepare()
    first: list[dict[str, Any]] = [
        {"input": "templates", "key": "c/w@1", "value": TEMPLATE},
        user([DEAD_APNS, LIVE_APNS], [DEAD_FCM]),
        {"fault": {"channel": "apns", "kind": "permanent", "address": DEAD_APNS, "times": 1}},  # 410 Unregistered
        {"fault": {"channel": "fcm", "kind": "permanent", "address": DEAD_FCM, "times": 1}},  # 404 UNREGISTERED
        {"barrier": {"users": 1, "templates": 1}},
        request(1),
        {"barrier": {"suppressed_addresses": 2}},  # the deliver stage heard both answers
    ]
    second: list[dict[str, Any]] = [
        request(2),  # neither dead token is tried: they are not on the profile any more
        user([LIVE_APNS], []),  # what the profile now holds: nothing added, nothing cleared...
        user([LIVE_APNS, DEAD_APNS], [DEAD_FCM]),  # ...the app installed again: the tokens are added anew
        {"tombstones": {"suppressed": 1}},
        request(3),
    ]
    scenario = Scenario(steps=second)
    scenario.expected["outcomes"] = [{}] * 11  # collect until this many have come, then a little longer
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    try:
        await worker.wait_ready()
        await replayer.feed(Scenario(steps=first))
        # the stored profile lost both dead tokens (its users changelog: what a restarted worker rebuilds from)
        pruned = await stored_profile(replayer, settings, lambda p: tokens(p) == ([LIVE_APNS], []))
        assert tokens(pruned) == ([LIVE_APNS], []), pruned
        assert pruned["user_id"] == "u1" and pruned["client_id"] == "c"  # the rest of the profile is kept
        await replayer.feed(scenario)
        got = await replayer.collect(scenario)
        restored = await stored_profile(replayer, settings, lambda p: len(tokens(p)[0]) == 2)
    finally:
        worker.stop()
    assert tokens(restored) == ([LIVE_APNS, DEAD_APNS], [DEAD_FCM])

    seen = sorted((o["notification_id"], o["status"], o["channel"] or "") for o in got["outcomes"])
    assert seen == sorted([
        ("n1", "accepted", ""), ("n1", "failed", "apns"), ("n1", "sent", "apns"), ("n1", "failed", "fcm"),
        ("n2", "accepted", ""), ("n2", "sent", "apns"), ("n2", "suppressed", "fcm"),
        ("n3", "accepted", ""), ("n3", "sent", "apns"), ("n3", "sent", "apns"), ("n3", "sent", "fcm"),
    ])  # fmt: skip
    reasons = [o["reason"] for o in got["outcomes"] if o["status"] == "suppressed"]
    assert reasons == ["suppressed: 404 UNREGISTERED"]  # the channel's only token died: why there is no push
    receipts = sorted((d["nid"], d["address"]) for d in sim.state.deliveries)
    assert receipts == sorted([("n1", LIVE_APNS), ("n2", LIVE_APNS), ("n3", LIVE_APNS), ("n3", DEAD_APNS),
                               ("n3", DEAD_FCM)])  # fmt: skip


# --- the pieces, without a broker -------------------------------------------------------------
class Store:
    """A table writer's read/write surface over a dict (partition, key) -> value."""

    def __init__(self) -> None:
        self.data: dict[tuple[int, bytes], bytes] = {}

    def get(self, partition: int, key: bytes) -> bytes | None:
        return self.data.get((partition, key))

    def set(self, partition: int, key: bytes, value: bytes) -> None:
        self.data[partition, key] = value

    def delete(self, partition: int, key: bytes) -> None:
        self.data.pop((partition, key), None)


def test_a_dead_push_token_leaves_the_profile_and_an_sms_opt_out_does_not() -> None:
    users = Store()
    profile = UserProfile(client_id="c", user_id="u1", phone="+14155550100", apns_tokens=[DEAD_APNS, LIVE_APNS],
                          fcm_tokens=[DEAD_FCM], locale="de")  # fmt: skip
    users.set(3, b"c/u1", encode(profile))
    book = SuppressionBook(Store(), users)
    book.add(3, "c/u1", "apns", DEAD_APNS, "410 Unregistered")
    book.add(3, "c/u1", "sms", "+14155550100", "400 21610 unsubscribed")  # the number stays: opted out, not gone
    stored = decode(UserProfile, users.get(3, b"c/u1") or b"")
    assert stored == msgspec.structs.replace(profile, apns_tokens=[LIVE_APNS])
    assert book.of(3, "c/u1") == {f"apns|{DEAD_APNS}": "410 Unregistered", "sms|+14155550100": "400 21610 unsubscribed"}
    book.add(3, "c/u1", "fcm", DEAD_FCM, "404 UNREGISTERED")
    assert decode(UserProfile, users.get(3, b"c/u1") or b"").fcm_tokens == []
    assert not book.drop_token(3, "c/u1", "fcm", DEAD_FCM)  # already gone: nothing written
    assert not book.drop_token(3, "c/nobody", "apns", DEAD_APNS)
    assert book.clear(3, "c/u1", {("apns", DEAD_APNS)}) == 1  # an upsert adding it anew


def test_a_channel_whose_tokens_all_died_reports_the_suppression_not_a_missing_address() -> None:
    req = NotificationRequest(notification_id="n1", client_id="c", idempotency_key="k", user_id="u1",
                              channels=["apns", "fcm"], template_id="w")  # fmt: skip
    templates = {"c/w@1": TemplateVersion(**TEMPLATE), "c/w@latest": 1}
    profile = UserProfile(client_id="c", user_id="u1", apns_tokens=[LIVE_APNS])  # the fcm token died and left
    routed = plan(req, profile, templates, "critical", 0.0, {f"fcm|{DEAD_FCM}": "404 UNREGISTERED"})
    assert [t.address for t in routed.tasks] == [LIVE_APNS]
    assert routed.suppressed == [("fcm", "suppressed: 404 UNREGISTERED")] and routed.failures == []
    never = plan(req, profile, templates, "critical", 0.0, {})
    assert never.failures == [("fcm", "no_address: user has no fcm address")] and never.suppressed == []
