"""Routing decisions, status folding and the idempotency window (pure logic)."""

from __future__ import annotations

from clarion.agents.route import plan
from clarion.schemas import NotificationRequest, Outcome, TemplateVersion, UserProfile
from clarion.schemas.records import asdict
from clarion.tables.idempotency import IdempotencyWindow, dedupe_key
from clarion.tables.status import (
    StatusBoard,
    attempts,
    decode_status,
    encode_status,
    fold,
    new_notification_id,
    partition_of,
)

TEMPLATE = TemplateVersion(client_id="c", template_id="w", version=1, push_body="hi", sms_body="hi")
TEMPLATES = {"c/w@1": asdict(TEMPLATE), "c/w@latest": 1}
USER = UserProfile(client_id="c", user_id="u1", phone="+14155550100", apns_tokens=["a" * 64, "b" * 64], locale="fr")


def request(**kw: object) -> NotificationRequest:
    base = dict(
        notification_id="n1",
        client_id="c",
        idempotency_key="k",
        user_id="u1",
        channels=["apns"],
        template_id="w",
        params={"x": 1},
    )
    return NotificationRequest(**{**base, **kw})


def test_one_task_per_device_token() -> None:
    routed = plan(request(), USER, TEMPLATES, "critical", now=0)
    assert [t.delivery_id for t in routed.tasks] == ["n1.apns.0", "n1.apns.1"]
    assert {t.address for t in routed.tasks} == {"a" * 64, "b" * 64}
    assert all(t.template_version == 1 and t.locale == "fr" and t.lane == "critical" for t in routed.tasks)


def test_channel_failures_do_not_block_other_channels() -> None:
    routed = plan(request(channels=["email", "sms", "fcm"]), USER, TEMPLATES, "critical", now=0)
    assert [t.channel for t in routed.tasks] == ["sms"]
    assert routed.failures == [
        ("email", "template_has_no_email_content"),
        ("fcm", "no_address: user has no fcm address"),
    ]


def test_expired_unknown_template_and_unknown_user() -> None:
    assert plan(request(expires_at=5.0), USER, TEMPLATES, "critical", now=10).failures == [(None, "expired")]
    assert plan(request(template_id="x"), USER, TEMPLATES, "critical", now=0).failures == [
        (None, "unknown_template: x@latest")
    ]
    assert plan(request(), None, TEMPLATES, "critical", now=0).failures == [(None, "unknown_user: u1")]


def outcome(status: str, **kw: object) -> Outcome:
    return Outcome(notification_id="n1", status=status, **kw)


def test_status_waits_for_every_planned_delivery() -> None:
    doc = fold(None, outcome("accepted", planned=2))
    doc = fold(doc, outcome("sent", delivery_id="d0", channel="sms", attempt=1))
    assert doc.status == "accepted"
    doc = fold(doc, outcome("retrying", delivery_id="d1", channel="sms", attempt=1))
    doc = fold(doc, outcome("dead_lettered", delivery_id="d1", channel="sms", attempt=3))
    assert doc.status == "partially_sent"  # one delivery reached its provider, one did not
    assert attempts(doc) == 4


def test_a_channel_that_could_not_be_planned_makes_a_sent_notification_partial() -> None:
    doc = fold(None, outcome("accepted", planned=1))
    doc = fold(doc, outcome("failed", channel="email", reason="no_address: user has no email address"))
    doc = fold(doc, outcome("sent", delivery_id="d0", channel="sms", attempt=1))
    assert doc.status == "partially_sent" and doc.failures == {"email": "no_address: user has no email address"}


def test_status_is_order_independent_and_idempotent() -> None:
    events = [
        outcome("accepted", planned=1),
        outcome("retrying", delivery_id="d", attempt=1),
        outcome("sent", delivery_id="d", attempt=2),
    ]
    forward = backward = None
    for e in events:
        forward = fold(forward, e)
    for e in reversed(events):
        backward = fold(backward, e)
    assert forward.status == backward.status == "sent"
    assert forward == backward
    again = fold(decode_status(encode_status(forward)), events[-1])
    assert again == forward


def test_status_terminal_states() -> None:
    assert fold(None, outcome("duplicate", duplicate_of="n0")).status == "duplicate"
    failed = fold(fold(None, outcome("accepted", planned=0)), outcome("failed", channel="email", reason="no_address"))
    assert failed.status == "failed" and failed.failures == {"email": "no_address"}
    dead = fold(fold(None, outcome("accepted", planned=1)), outcome("dead_lettered", delivery_id="d", attempt=4))
    assert dead.status == "dead_lettered"


class FakeWriter:
    """A ChangelogWriter stand-in that records the tombstones it would send."""

    def __init__(self) -> None:
        self.table = self
        self.data: dict[bytes, bytes] = {}
        self.tombstones: list[tuple[int, bytes]] = []

    def get(self, partition: int, key: bytes) -> bytes | None:
        return self.data.get(key)

    def set(self, partition: int, key: bytes, value: bytes) -> None:
        self.data[key] = value

    def delete(self, partition: int, key: bytes) -> None:
        self.data.pop(key, None)
        self.tombstones.append((partition, key))


def test_idempotency_window_expires_and_prunes_only_owned_partitions() -> None:
    writer = FakeWriter()
    window = IdempotencyWindow(writer, window_s=100)
    a, b, c = dedupe_key("c", "a"), dedupe_key("c", "b"), dedupe_key("other", "a")
    window.remember(a, "n-a", partition=0, now=0)
    window.remember(b, "n-b", partition=1, now=0)
    window.remember(c, "n-c", partition=0, now=90)
    assert window.first_seen(0, a, now=50) == "n-a"
    assert window.first_seen(0, a, now=100) is None  # expired even before pruning
    assert a != c
    removed = window.prune(owned={0}, now=150)
    assert removed == 1
    assert writer.tombstones == [(0, a)]
    assert window.first_seen(0, c, now=150) == "n-c"


def test_api_made_ids_name_their_partition() -> None:
    nid = new_notification_id(17, "ab" * 16)
    assert nid == "n17_" + "ab" * 16 and partition_of(nid) == 17
    for foreign in ("n-email", "n_abc", "x3_ab", "n_", "n3_", "nx_12", "n-1_ab"):
        assert partition_of(foreign) is None, foreign


def test_statuses_expire_after_their_retention_with_a_tombstone() -> None:
    writer = FakeWriter()
    board = StatusBoard(writer)
    board.fold(0, Outcome(notification_id="old", status="accepted", planned=0, ts=100.0))
    board.fold(1, Outcome(notification_id="other-partition", status="accepted", planned=0, ts=100.0))
    board.fold(0, Outcome(notification_id="fresh", status="accepted", planned=0, ts=900.0))
    for (partition, key), doc in board.dirty.items():
        writer.set(partition, key, encode_status(doc))
    board.dirty.clear()
    assert board.prune(owned={0}, now=1000.0, retention_s=500.0) == 1
    assert writer.tombstones == [(0, b"old")]
    assert set(writer.data) == {b"other-partition", b"fresh"}
