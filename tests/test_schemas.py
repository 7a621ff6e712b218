"""Records, the orjson codec and API body validation."""

from __future__ import annotations

import re

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from clarion.schemas import DeliveryTask, NotificationRequest, PoisonMessage, decode, encode
from clarion.schemas.codec import decode_batch, encode_batch
from clarion.schemas.validation import (
    MAX_DEPTH,
    ValidationFailed,
    is_id,
    is_timezone,
    validate_notification,
    validate_template,
    validate_user,
)
from clarion.web.status import versions_of

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
    out = validate_notification({**GOOD, "channels": ["email", "email"], "expires_at": "2999-01-01T00:00:00Z"}, "acme")
    assert out["channels"] == ["email"]
    assert out["expires_at"] > 0


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"idempotency_key": None}, "idempotency_key"),
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
        validate_notification(body, "acme")
    assert fields_of(info.value) == {field}


def test_every_bad_field_is_reported_at_once() -> None:
    with pytest.raises(ValidationFailed) as info:
        validate_notification({"channels": "fax"}, "acme")
    assert fields_of(info.value) == {"idempotency_key", "user_id", "template_id", "channels"}


def test_non_object_body() -> None:
    with pytest.raises(ValidationFailed) as info:
        validate_notification([1, 2], "acme")
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
        },
        "acme",
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
            },
            "acme",
        )
    assert fields_of(info.value) == {"email", "phone", "apns_tokens", "timezone", "locale"}


def test_template_validation() -> None:
    t = validate_template({"template_id": "w", "version": 2, "sms_body": "hi"}, "acme")
    assert t.key == "acme/w@2" and t.ref == "w@2" and t.channels() == ["sms"]
    with pytest.raises(ValidationFailed) as info:
        validate_template({"template_id": "w", "version": "2", "email_subject": "s"}, "acme")
    assert fields_of(info.value) == {"version", "email_text"}
    with pytest.raises(ValidationFailed) as info:
        validate_template({"template_id": "w", "version": 1}, "acme")
    assert fields_of(info.value) == {"body"}


def nested(levels: int) -> dict:
    """An object `levels` objects deep, itself included."""
    doc: dict = {}
    for _ in range(levels - 1):
        doc = {"a": doc}
    return doc


def error_of(exc: ValidationFailed, field: str) -> str:
    return next(e["error"] for e in exc.errors if e["field"] == field)


@pytest.mark.parametrize(
    ("params", "error"),
    [
        (nested(MAX_DEPTH + 1), "nested deeper than 8 levels"),
        ({"rows": [{"cells": [[[[[[1]]]]]]}]}, "nested deeper than 8 levels"),
        (nested(2000), "nested deeper than 8 levels"),
        ({"many": list(range(101))}, "more than 100 entries"),
        ({f"p{i}": 1 for i in range(101)}, "more than 100 entries"),
        ({"order": {"k" * 129: 1}}, "key 'kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk...' is over 128 characters"),
        ({"blob": "x" * 16 * 1024}, "is over 16384 bytes as JSON"),
        ({"first-name": "Ann"}, "name 'first-name' must be a letter or _"),
        ({"2fa": "1"}, "name '2fa'"),
        ({"naïve": "1"}, "name 'naïve'"),
        ({"p" * 65: "1"}, "must be a letter or _ then up to 63 letters, digits or _"),
    ],
)
def test_params_limits(params: dict, error: str) -> None:
    with pytest.raises(ValidationFailed) as info:
        validate_notification({**GOOD, "params": params}, "acme")
    assert fields_of(info.value) == {"params"}
    assert error in error_of(info.value, "params")


def test_params_within_the_limits_pass() -> None:
    params = {"_x": 1, "self": "kept (the renderer decides)", "deep": nested(MAX_DEPTH - 1), "p" * 64: "1"}
    params["rows"] = [{"sku": "a-1", "qty": 2}] * 100
    assert validate_notification({**GOOD, "params": params}, "acme")["params"] == params


def test_attributes_limits_and_free_keys() -> None:
    user = validate_user({"user_id": "u1", "attributes": {"plan-tier": "gold", "ünï code": [1, {"a": None}]}}, "acme")
    assert user.attributes["plan-tier"] == "gold"
    for attributes in (nested(MAX_DEPTH + 1), {"k" * 129: 1}, {"blob": "x" * 17000}, {"n": list(range(101))}):
        with pytest.raises(ValidationFailed) as info:
            validate_user({"user_id": "u1", "attributes": attributes}, "acme")
        assert fields_of(info.value) == {"attributes"}


@pytest.mark.parametrize(
    "tz", ["Europe", "Europe/", "a" * 300, "../../../etc/passwd", "Europe/Paris\x00", "", None, 1, ["UTC"]]
)
def test_timezone_must_be_a_known_zone_and_is_never_opened(tz: object) -> None:
    """The names "Europe" (IsADirectoryError) and a 300-character one (OSError) used to answer 500."""
    assert not is_timezone(tz)
    with pytest.raises(ValidationFailed) as info:
        validate_user({"user_id": "u1", "timezone": tz}, "acme")
    assert fields_of(info.value) == {"timezone"}
    assert error_of(info.value, "timezone") == "must be an IANA zone such as Europe/Paris"


def test_known_timezones_pass() -> None:
    assert validate_user({"user_id": "u1"}, "acme").timezone == "UTC"
    zone = "America/Argentina/Buenos_Aires"
    assert validate_user({"user_id": "u1", "timezone": zone}, "acme").timezone == zone


def test_ids_are_safe_in_a_url_path() -> None:
    assert all(is_id(i) for i in ("n3_" + "ab" * 16, "ext:a@b.c-1", "a..b", "x" * 128))
    assert not any(is_id(i) for i in (".", "..", "...", "a/b", "a b", "x\n", "x" * 129, "", None, 7, "été"))


def test_channels_error_survives_deeply_nested_junk() -> None:
    junk: list = []
    for _ in range(5000):
        junk = [junk]
    with pytest.raises(ValidationFailed) as info:
        validate_notification({**GOOD, "channels": [junk, "x" * 1000, "fax"]}, "acme")
    assert error_of(info.value, "channels").startswith("unknown channel(s) ['<list>', 'xxxx")
    assert "'fax'" in error_of(info.value, "channels")


def test_versions_of_a_template_come_from_the_keys_held() -> None:
    keys = ["big@1", "big@1000000000000", "big@latest", "big@x@3", "other@2", "big"]
    assert versions_of(keys, "big") == [1, 10**12]
    assert versions_of(keys, "big@x") == [3]
