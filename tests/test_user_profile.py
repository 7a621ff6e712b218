"""The user profile's audience and promo-policy fields: validation, and records written before them."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from clarion.schemas.codec import decode, encode
from clarion.schemas.records import QuietHours, UserProfile
from clarion.schemas.validation import MAX_TAGS, ValidationFailed, validate_user

BASE = {"user_id": "ann", "email": "ann@example.com"}


def errors_of(body: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(ValidationFailed) as raised:
        validate_user(body, "acme")
    return {e["field"]: e["error"] for e in raised.value.errors}


def test_the_new_fields_are_validated_into_the_profile() -> None:
    user = validate_user(
        {
            **BASE,
            "tags": ["vip", "beta", "vip", "plan:pro", "a/b+c@d.e-f_g"],
            "promo_opt_out": True,
            "channel_opt_out": ["sms", "email", "sms"],
            "quiet_hours": {"start": "22:00", "end": "08:00"},
        },
        "acme",
    )
    assert user.tags == ["vip", "beta", "plan:pro", "a/b+c@d.e-f_g"]  # duplicates dropped, order kept
    assert user.promo_opt_out is True
    assert user.channel_opt_out == ["sms", "email"]
    assert user.quiet_hours == QuietHours(start="22:00", end="08:00")


def test_the_new_fields_default_to_nothing() -> None:
    user = validate_user(BASE, "acme")
    assert (user.tags, user.promo_opt_out, user.channel_opt_out, user.quiet_hours) == ([], False, [], None)
    assert validate_user({**BASE, "quiet_hours": None}, "acme").quiet_hours is None


@pytest.mark.parametrize(
    ("change", "field", "error"),
    [
        ({"tags": "vip"}, "tags", "must be a list of strings"),
        ({"tags": ["ok", 7]}, "tags", "tag 7 must be"),
        ({"tags": ["ok", ""]}, "tags", "tag '' must be"),
        ({"tags": ["has space"]}, "tags", "tag 'has space' must be"),
        ({"tags": ["x" * 65]}, "tags", "1-64 characters"),
        ({"tags": ["new\nline"]}, "tags", "must be"),
        ({"tags": ["é"]}, "tags", "must be"),
        ({"tags": [f"t{i}" for i in range(MAX_TAGS + 1)]}, "tags", f"at most {MAX_TAGS}"),
        ({"tags": [["nested"]]}, "tags", "tag '<list>' must be"),
        ({"promo_opt_out": "yes"}, "promo_opt_out", "true or false"),
        ({"promo_opt_out": 1}, "promo_opt_out", "true or false"),
        ({"promo_opt_out": None}, "promo_opt_out", "true or false"),
        ({"channel_opt_out": "sms"}, "channel_opt_out", "must be a list of channels"),
        ({"channel_opt_out": ["sms", "fax"]}, "channel_opt_out", "unknown channel(s) ['fax']"),
        ({"channel_opt_out": [{"a": 1}]}, "channel_opt_out", "unknown channel(s) ['<dict>']"),
        ({"quiet_hours": "22:00-08:00"}, "quiet_hours", "must be an object"),
        ({"quiet_hours": []}, "quiet_hours", "must be an object"),
        ({"quiet_hours": {"start": "22:00"}}, "quiet_hours.end", "HH:MM"),
        ({"quiet_hours": {"end": "08:00"}}, "quiet_hours.start", "HH:MM"),
        ({"quiet_hours": {"start": "24:00", "end": "08:00"}}, "quiet_hours.start", "HH:MM"),
        ({"quiet_hours": {"start": "22:60", "end": "08:00"}}, "quiet_hours.start", "HH:MM"),
        ({"quiet_hours": {"start": "9:00", "end": "08:00"}}, "quiet_hours.start", "HH:MM"),
        ({"quiet_hours": {"start": "22:00", "end": "08:00\n"}}, "quiet_hours.end", "HH:MM"),
        ({"quiet_hours": {"start": "22:00", "end": 800}}, "quiet_hours.end", "HH:MM"),
        ({"quiet_hours": {"start": "22:00", "end": "\u0660\u0668:\u0660\u0660"}}, "quiet_hours.end", "HH:MM"),
        ({"quiet_hours": {"start": "08:00", "end": "08:00"}}, "quiet_hours.end", "must differ from start"),
        ({"quiet_hours": {"start": "22:00", "end": "08:00", "tz": "UTC"}}, "quiet_hours", "unknown field(s) ['tz']"),
    ],
)
def test_a_bad_value_names_its_field(change: dict[str, Any], field: str, error: str) -> None:
    errors = errors_of({**BASE, **change})
    assert list(errors) == [field]
    assert error in errors[field]


def test_every_bad_field_is_reported_at_once() -> None:
    errors = errors_of(
        {**BASE, "email": "x", "tags": 1, "promo_opt_out": 1, "channel_opt_out": 1, "quiet_hours": {"start": "x"}}
    )
    assert set(errors) == {"email", "tags", "promo_opt_out", "channel_opt_out", "quiet_hours.start", "quiet_hours.end"}


def test_quiet_hours_take_every_minute_of_the_day() -> None:
    for start, end in (("00:00", "23:59"), ("23:59", "00:00"), ("12:30", "12:31"), ("19:05", "07:45")):
        assert validate_user({**BASE, "quiet_hours": {"start": start, "end": end}}, "acme").quiet_hours == QuietHours(
            start=start, end=end
        )


def test_a_record_written_before_the_new_fields_decodes_as_before() -> None:
    old = {
        "client_id": "acme",
        "user_id": "ann",
        "email": "ann@example.com",
        "phone": None,
        "apns_tokens": [],
        "fcm_tokens": [],
        "locale": "fr",
        "timezone": "Europe/Paris",
        "attributes": {"plan": "pro"},
    }
    user = decode(UserProfile, orjson.dumps(old))
    assert (user.email, user.locale, user.timezone, user.attributes) == ("ann@example.com", "fr", "Europe/Paris",
                                                                         {"plan": "pro"})  # fmt: skip
    assert (user.tags, user.promo_opt_out, user.channel_opt_out, user.quiet_hours) == ([], False, [], None)
    assert {k: v for k, v in orjson.loads(encode(user)).items() if k in old} == old


def test_a_profile_with_the_new_fields_round_trips() -> None:
    quiet = {"start": "01:00", "end": "02:00"}
    user = validate_user({**BASE, "tags": ["a"], "channel_opt_out": ["fcm"], "quiet_hours": quiet}, "c")
    assert decode(UserProfile, encode(user)) == user


@given(st.dictionaries(st.sampled_from(["tags", "promo_opt_out", "channel_opt_out", "quiet_hours", "user_id"]),
                       st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                                    lambda inner: st.lists(inner, max_size=4)
                                    | st.dictionaries(st.sampled_from(["start", "end", "x"]), inner, max_size=3),
                                    max_leaves=10)))  # fmt: skip
def test_any_json_in_the_new_fields_is_a_profile_or_a_validation_error(body: dict[str, Any]) -> None:
    try:
        user = validate_user({"user_id": "u", **body}, "acme")
    except ValidationFailed as exc:
        assert exc.errors and all(e["field"] and e["error"] for e in exc.errors)
    else:
        assert decode(UserProfile, encode(user)) == user
