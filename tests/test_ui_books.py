"""The dashboard's pieces that need no broker: masking, the per-client outcome and dead-letter books."""

from __future__ import annotations

import orjson

from clarion.schemas.codec import encode, encode_batch
from clarion.schemas.records import DeadLetter, Outcome, QuietHours, UserProfile
from clarion.web.masking import mask_address, mask_email, mask_phone, masked_suppressions, masked_user
from clarion.web.ui_books import DeadLetterBook, OutcomeBook, PerClient, client_of


def test_personal_fields_are_masked() -> None:
    assert mask_email("alice@example.com") == "a***@example.com"
    assert mask_email("not-an-address") == "***"
    assert mask_email("@example.com") == "***"
    assert mask_phone("+14155550100") == "***00"
    assert mask_phone("12") == "***"
    assert mask_address("apns", "a" * 64) == "apns token (64 chars)"
    user = UserProfile(client_id="c", user_id="u1", email="bob@example.org", phone="+4915112345678",
                       apns_tokens=["t" * 64], fcm_tokens=["f1", "f2"], attributes={"age": 41, "plan": "gold"},
                       tags=["vip"], quiet_hours=QuietHours(start="22:00", end="08:00"))  # fmt: skip
    shown = masked_user(user)
    assert shown["email"] == "b***@example.org" and shown["phone"] == "***78"
    assert shown["apns_tokens"] == 1 and shown["fcm_tokens"] == 2
    assert shown["attributes"] == ["age", "plan"]  # names only: values may be anything
    assert shown["quiet_hours"] == "22:00-08:00"
    text = orjson.dumps(shown).decode()
    for secret in ("bob@", "12345678", "t" * 64, "f1", "gold", "41"):
        assert secret not in text
    rows = masked_suppressions("u1", {"sms|+15005550004": "21610 unsubscribed", "email|x@y.z": "bounced"})
    assert rows == [
        {"user_id": "u1", "channel": "email", "address": "x***@y.z", "reason": "bounced"},
        {"user_id": "u1", "channel": "sms", "address": "***04", "reason": "21610 unsubscribed"},
    ]


def outcome(nid: str, status: str, ts: float, client: str = "a", **kw: object) -> Outcome:
    return Outcome(notification_id=nid, status=status, client_id=client, user_id="u", ts=ts, **kw)  # type: ignore[arg-type]


def test_outcomes_are_kept_per_client_filtered_and_counted_with_latency() -> None:
    book = OutcomeBook(ring=3)
    batch = [
        outcome("n1_x", "accepted", 100.0, planned=1),
        outcome("n1_x", "sent", 100.25, channel="email"),
        outcome("n2_y", "accepted", 101.0, client="b"),
        outcome("n3_z", "failed", 102.0, channel="sms"),
    ]
    book.fold(0, 0, b"n1_x", encode_batch(encode(o) for o in batch))
    book.fold(0, 1, b"n4", encode(outcome("n4_p", "sent", 103.0, channel="email", lane="promo")))
    book.fold(0, 2, b"bad", b"{not json")  # skipped
    assert [o["notification_id"] for o in book.recent("a")] == ["n4_p", "n3_z", "n1_x"]  # ring of 3, newest first
    assert [o["notification_id"] for o in book.recent("b")] == ["n2_y"]
    assert book.recent("nobody") == []
    assert [o["status"] for o in book.recent("a", status="sent")] == ["sent", "sent"]
    assert [o["notification_id"] for o in book.recent("a", channel="email", lane="critical")] == ["n1_x"]
    assert [o["notification_id"] for o in book.recent("a", notification_id="n3")] == ["n3_z"]
    assert len(book.recent("a", limit=1)) == 1
    lanes = book.lanes("a")
    counts = {(c["lane"], c["channel"], c["status"]): c["n"] for c in lanes["counts"]}
    assert counts == {("critical", "-", "accepted"): 1, ("critical", "email", "sent"): 1,
                      ("critical", "sms", "failed"): 1, ("promo", "email", "sent"): 1}  # fmt: skip
    assert lanes["since"] == 100.0
    assert lanes["latency"] == [{"lane": "critical", "channel": "email", "n": 1, "p50_ms": 250.0, "p95_ms": 250.0,
                                 "max_ms": 250.0}]  # fmt: skip
    assert book.lanes("b")["latency"] == []  # accepted, never sent


def test_clients_are_bounded_least_recently_heard_of_dropped() -> None:
    clients: PerClient[list[int]] = PerClient(list, 2)
    clients.of("a").append(1)
    clients.of("b")
    clients.of("a")
    clients.of("c")  # drops b, the least recently used
    assert sorted(clients.items) == ["a", "c"] and clients.of("a") == [1]


def letter(key: str | None, payload: object, **kw: object) -> DeadLetter:
    text = payload if isinstance(payload, str) else orjson.dumps(payload).decode()
    return DeadLetter(source_topic="t.critical.sms", reason="retries_exhausted", payload=text, key=key, **kw)  # type: ignore[arg-type]


def test_a_dead_letter_belongs_to_the_client_its_key_and_payload_name() -> None:
    assert client_of(letter("a/u1", {"client_id": "a"})) == "a"
    assert client_of(letter("a/u1", "not json")) == "a"
    assert client_of(letter("n1_abc", {"client_id": "b"})) == "b"  # feedback: keyed by notification id
    assert client_of(letter("a/u1", {"client_id": "b"})) is None  # they disagree: nobody's
    assert client_of(letter(None, "garbage")) is None
    assert client_of(letter("n1_abc", {"client_id": ""})) is None
    book = DeadLetterBook(ring=2)
    for offset, (key, client) in enumerate([("a/u", "a"), ("b/u", "b"), ("a/u", "a"), ("a/u", "a"), (None, "")]):
        book.fold(1, offset, None, encode(letter(key, {"client_id": client}, ts=float(offset))))
    book.fold(1, 9, None, b"not a dead letter")
    assert [e.id for e in book.entries("a")] == ["1:3", "1:2"]  # the last two, newest first
    assert [e.id for e in book.entries("b")] == ["1:1"]
    assert [e.id for e in book.find("a", ["1:1", "1:3"])] == ["1:3"]  # b's letter is not a's to find
