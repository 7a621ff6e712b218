"""Records, the orjson codec and API body validation."""

from __future__ import annotations

import re

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from clarion.schemas import DeliveryTask, NotificationRequest, PoisonMessage, decode, encode
from clarion.schemas.codec import decode_batch, encode_batch
from clarion.schemas.validation import ValidationFailed, validate_notification, validate_template, validate_user

GOOD = {
    "client_id": "acme",
    "idempotency_key": "order-1",
    "user_id": "u1",
    "channels": ["email", "sms"],
    "template_id": "welcome",
    "params": {"name": "Ann"},
}


def fields_of(exc: ValidationFailed) -> set[str]:
    return {e["field"] for e in exc.errors}


def test_request_round_trips_through_the_codec() -> None:
    req = NotificationRequest(notification_id="n1", **GOOD)
    assert decode(NotificationRequest, encode(req)) == req
    assert orjson.loads(encode(req))["channels"] == ["email", "sms"]


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"not json", "undecodable"),
        (b"[1]", "invalid: Expected `object`, got `array`"),
        (b'{"notification_id": "n"}', "invalid: Object missing required field `client_id`"),
        (
            orjson.dumps({"notification_id": "n", **GOOD, "channels": "email"}),
            "invalid: Expected `array`, got `str` - at `$.channels`",
        ),
        (orjson.dumps({"notification_id": "n", **GOOD, "channels": ["fax"]}), "at `$.channels[0]`"),
        (orjson.dumps({"notification_id": "n", **GOOD, "template_version": True}), "template_version"),
        (None, "empty value"),
    ],
)
def test_decode_names_what_is_wrong(raw: bytes | None, reason: str) -> None:
    with pytest.raises(PoisonMessage, match=re.escape(reason)):
        decode(NotificationRequest, raw)


@given(st.binary(max_size=200))
def test_decode_never_raises_anything_but_poison(raw: bytes) -> None:
    try:
        decode(DeliveryTask, raw)
    except PoisonMessage:
        pass


REQUESTS_OR_JUNK = st.lists(
    st.one_of(st.builds(lambda n: {"notification_id": f"n{n}", **GOOD}, st.integers(0, 99)), st.integers(-99, 99))
)


@given(REQUESTS_OR_JUNK)
def test_decode_batch_keeps_every_good_item_and_names_each_bad_one(values: list) -> None:
    items, poison = decode_batch(NotificationRequest, orjson.dumps(values))
    assert [i.notification_id for i in items] == [v["notification_id"] for v in values if isinstance(v, dict)]
    assert [p.raw for p in poison] == [orjson.dumps(v) for v in values if not isinstance(v, dict)]
    assert all(p.reason == "invalid: Expected `object`, got `int`" for p in poison)


def test_a_batch_round_trips_and_a_single_object_is_a_batch_of_one() -> None:
    reqs = [NotificationRequest(notification_id=f"n{i}", **GOOD) for i in range(3)]
    assert decode_batch(NotificationRequest, encode_batch(encode(r) for r in reqs)) == (reqs, [])
    assert decode_batch(NotificationRequest, encode(reqs[0])) == ([reqs[0]], [])
    assert decode_batch(NotificationRequest, b"7")[1][0].reason.startswith("undecodable: expected a JSON object or")


def test_valid_notification_passes() -> None:
    out = validate_notification({**GOOD, "channels": ["email", "email"], "expires_at": "2999-01-01T00:00:00Z"})
    assert out["channels"] == ["email"]
    assert out["expires_at"] > 0


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"client_id": None}, "client_id"),
        ({"user_id": "has space"}, "user_id"),
        ({"channels": []}, "channels"),
        ({"channels": ["pigeon"]}, "channels"),
        ({"template_version": 0}, "template_version"),
        ({"params": [1]}, "params"),
        ({"expires_at": "yesterday"}, "expires_at"),
        ({"expires_at": "2000-01-01T00:00:00Z"}, "expires_at"),
        ({"expires_at": "2999-01-01T00:00:00"}, "expires_at"),
    ],
)
def test_invalid_notification_names_the_field(change: dict, field: str) -> None:
    body = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    with pytest.raises(ValidationFailed) as info:
        validate_notification(body)
    assert fields_of(info.value) == {field}


def test_every_bad_field_is_reported_at_once() -> None:
    with pytest.raises(ValidationFailed) as info:
        validate_notification({"channels": "fax"})
    assert fields_of(info.value) == {"client_id", "idempotency_key", "user_id", "template_id", "channels"}


def test_non_object_body() -> None:
    with pytest.raises(ValidationFailed) as info:
        validate_notification([1, 2])
    assert "body" in fields_of(info.value)


def test_user_validation() -> None:
    user = validate_user(
        {
            "user_id": "u1",
            "email": "a@b.co",
            "phone": "+14155550100",
            "apns_tokens": ["ab" * 32],
            "fcm_tokens": ["token-abcdefghijklmnopqrstu"],
            "timezone": "Europe/Paris",
            "locale": "pt-BR",
        }
    )
    assert user.email == "a@b.co" and user.locale == "pt-BR"
    with pytest.raises(ValidationFailed) as info:
        validate_user(
            {
                "user_id": "u1",
                "email": "nope",
                "phone": "555",
                "apns_tokens": ["zz"],
                "timezone": "Mars/Base",
                "locale": "English!",
            }
        )
    assert fields_of(info.value) == {"email", "phone", "apns_tokens", "timezone", "locale"}


def test_template_validation() -> None:
    t = validate_template({"template_id": "w", "version": 2, "sms_body": "hi"})
    assert t.key == "w@2" and t.channels() == ["sms"]
    with pytest.raises(ValidationFailed) as info:
        validate_template({"template_id": "w", "version": "2", "email_subject": "s"})
    assert fields_of(info.value) == {"version", "email_text"}
    with pytest.raises(ValidationFailed) as info:
        validate_template({"template_id": "w", "version": 1})
    assert fields_of(info.value) == {"body"}
