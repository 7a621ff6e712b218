"""Audiences: the expression language (parse, meaning, errors, limits), the Audience record, and fuzzing."""

from __future__ import annotations

import sys
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import clarion.schemas.audiences as audiences_module
from clarion.schemas.audiences import (
    MAX_DEPTH,
    MAX_EXPRESSION_CHARS,
    MAX_USER_IDS,
    Audience,
    ExpressionError,
    audience_from_body,
    compile_audience,
    parse_where,
)
from clarion.schemas.records import UserProfile
from clarion.schemas.validation import ValidationFailed
from tests.budget import examples

ANN = UserProfile(
    client_id="acme",
    user_id="ann",
    locale="fr-CA",
    timezone="America/Toronto",
    tags=["beta", "vip"],
    attributes={
        "plan": "pro",
        "orders": 3,
        "score": 2.5,
        "churned": False,
        "address": {"country": "CA", "city": "Montréal"},
        "signup-source": "ads",
        "flags": ["early", 7, True],
        "nothing": None,
        "a.b": "dotted",
    },
)
BOB = UserProfile(client_id="acme", user_id="bob")  # no tags, no attributes, locale en, UTC


def matches(expression: str, user: UserProfile = ANN) -> bool:
    return parse_where(expression)(user)


@pytest.mark.parametrize(
    ("expression", "ann", "bob"),
    [
        ('attributes.plan == "pro"', True, False),
        ("attributes.plan == 'pro'", True, False),
        ('attributes.plan != "pro"', False, True),  # missing: equal to nothing, so != is true
        ('"beta" in tags', True, False),
        ('not "beta" in tags', False, True),
        ('"Beta" in tags', False, False),  # case matters
        ('locale == "fr-CA"', True, False),
        ('locale in ["fr", "fr-CA"]', True, False),
        ('timezone == "UTC"', False, True),
        ("attributes.orders >= 3", True, False),
        ("attributes.orders > 3", False, False),
        ("attributes.orders == 3.0", True, False),  # numbers are numbers, int or float
        ("attributes.score < 2.6 and attributes.score > -1", True, False),
        ("attributes.orders <= -1e3", False, False),
        ("attributes.churned == false", True, False),
        ("attributes.churned == 0", False, False),  # booleans are not numbers
        ("attributes.orders == true", False, False),
        ('attributes.plan > "alpha"', True, False),  # strings order by code point
        ("attributes.plan > 1", False, False),  # mixed types are not ordered
        ('attributes.address.country == "CA"', True, False),
        ('attributes["address"]["city"] == "Montréal"', True, False),
        ('attributes["signup-source"] == "ads"', True, False),
        ('attributes.signup-source == "ads"', True, False),  # - is allowed in a name
        ('attributes["a.b"] == "dotted"', True, False),
        ('attributes.a.b == "dotted"', False, False),  # a path, not the key "a.b"
        ('attributes.address.country.x == "CA"', False, False),
        ('"early" in attributes.flags', True, False),
        ("7 in attributes.flags", True, False),
        ("true in attributes.flags", True, False),
        ('"pro" in attributes.plan', False, False),  # not a list: no substring test
        ("has attributes.plan", True, False),
        ("has attributes.nothing", True, False),  # present, even if null
        ("attributes.nothing == 1 or attributes.nothing != 1", True, True),
        ("has attributes.address.city and not has attributes.address.zip", True, False),
        ('attributes.plan in ["free", "pro"]', True, False),
        ("attributes.orders in [1, 2, 3]", True, False),
        ("attributes.orders in []", False, False),
        ('(locale == "en" or "vip" in tags) and not (attributes.churned == true)', True, True),
        ('not not "vip" in tags', True, False),
        ('locale == "en" or locale == "fr-CA" and attributes.orders > 5', False, True),  # and binds tighter
        ('(locale == "en" or locale == "fr-CA") and attributes.orders > 5', False, False),
        ('attributes.plan=="pro"and"vip"in tags', True, False),  # spaces are optional between tokens
        ('"\\u00e9t\\u00e9\\n" in tags', False, False),
    ],
)
def test_expressions_mean_what_the_docstring_says(expression: str, ann: bool, bob: bool) -> None:
    predicate = parse_where(expression)
    assert (predicate(ANN), predicate(BOB)) == (ann, bob)


def test_escapes_in_strings() -> None:
    user = UserProfile(client_id="c", user_id="u", attributes={"s": 'a"b\'c\\d\n\té'})
    assert matches("attributes.s == \"a\\\"b'c\\\\d\\n\\t\\u00e9\"", user)
    assert matches("attributes.s == 'a\"b\\'c\\\\d\\n\\té'", user)


@pytest.mark.parametrize(
    ("expression", "position", "message"),
    [
        ("", 0, "expected an expression"),
        ("   ", 3, "expected an expression"),
        ("attributes", 10, "expected .<name> after attributes"),
        ("attributes.", 11, "expected an attribute name"),
        ("attributes.plan = 'pro'", 16, "compare with =="),
        ("attributes.plan ! 'pro'", 16, "write not"),
        ("attributes.plan == ", 19, "expected a string, number, true or false"),
        ("attributes.plan == pro", 19, "expected a string, number, true or false"),
        ("attributes.plan == 'pro", 19, "a string is not closed"),
        ("attributes.plan == 'p\\q'", 21, "unknown escape"),
        ("attributes.plan == 'p\\u12'", 21, "unknown escape"),
        ("attributes.plan", 15, "expected ==, !=, <, <=, >, >= or in"),
        ("'pro' == attributes.plan", 6, "expected in after a literal"),
        ("'x' in locale", 7, "expected tags or attributes"),
        ("5 in tags", 0, "tags are strings"),
        ("tags == 'x'", 0, 'as "tag" in tags'),
        ("plan == 'pro'", 0, "expected a test"),
        ("ATTRIBUTES.plan == 'pro'", 0, "expected a test"),
        ("attributes.orders > true", 20, "booleans are not ordered"),
        ("attributes.plan in 'pro'", 19, "expected '['"),
        ("attributes.plan in ['a' 'b']", 24, "',' or ']'"),
        ("attributes.plan in ['a',]", 24, "expected a string"),
        ("(locale == 'en'", 15, "expected ')'"),
        ("locale == 'en')", 14, "expected and, or"),
        ("locale == 'en' and", 18, "expected a test"),
        ("locale == 'en' xor locale == 'fr'", 15, "expected and, or"),
        ("has locale", 4, "expected attributes"),
        ("attributes['a'", 14, "expected ']'"),
        ("attributes[a]", 11, "a quoted attribute name"),
        ("attributes.plan == -x", 19, "unexpected '-'"),
        ("attributes.plan == 'a' ; drop", 23, "unexpected character ';'"),
        ("attributes.plän == 'a'", 13, "unexpected character 'ä'"),
        ("locale == '٣' and attributes.x == -٣", 34, "unexpected '-'"),
        ("attributes.x == ٣", 16, "unexpected character '٣'"),
    ],
)
def test_a_bad_expression_names_the_position_and_the_problem(expression: str, position: int, message: str) -> None:
    with pytest.raises(ExpressionError) as raised:
        parse_where(expression)
    assert raised.value.position == position, raised.value
    assert message in raised.value.message
    assert isinstance(raised.value, ValueError) and raised.value.field == "audience.where"
    assert f"at position {position}" in str(raised.value)


def test_length_and_depth_are_bounded() -> None:
    test = "locale == 'en'"
    assert matches("(" * MAX_DEPTH + test + ")" * MAX_DEPTH, BOB)
    with pytest.raises(ExpressionError, match=f"nested deeper than {MAX_DEPTH}"):
        parse_where("(" * (MAX_DEPTH + 1) + test + ")" * (MAX_DEPTH + 1))
    assert matches("not " * MAX_DEPTH + test, BOB)  # an even number of nots
    with pytest.raises(ExpressionError, match="nested deeper"):
        parse_where("not " * (MAX_DEPTH + 1) + test)
    with pytest.raises(ExpressionError, match="nested deeper"):
        parse_where("(not " * 20 + test + ")" * 20)
    long_chain = " or ".join([test] * ((MAX_EXPRESSION_CHARS - 14) // 18 + 1))
    assert len(long_chain) <= MAX_EXPRESSION_CHARS and matches(long_chain, BOB)  # width is not depth
    with pytest.raises(ExpressionError, match="over 2000 characters") as raised:
        parse_where(test + " " * MAX_EXPRESSION_CHARS)
    assert raised.value.position == MAX_EXPRESSION_CHARS


# A parse (and one evaluation) of any text up to the length limit takes well under a millisecond to a few; the
# bound leaves room for a loaded 2-core machine while still catching anything worse than linear.
# The parser's work, counted as calls into clarion/schemas/audiences.py, grows linearly with the text:
# a few calls a character on the worst inputs below (at most 3.5 measured); quadratic work would
# be thousands a character on 2,000 characters. A count, not a clock: the machine is shared.
CALLS_PER_CHAR = 8


def parser_calls(text: str) -> int:
    """Calls into the parser module while `text` is parsed (or refused) and evaluated on two profiles."""
    calls = 0
    module = audiences_module.__file__

    def count(frame: Any, event: str, arg: Any) -> None:
        nonlocal calls
        if event == "call" and frame.f_code.co_filename == module:
            calls += 1

    sys.setprofile(count)
    try:
        try:
            predicate = parse_where(text)
        except ExpressionError:
            pass
        else:
            predicate(ANN)
            predicate(BOB)
    finally:
        sys.setprofile(None)
    return calls


WORST_CASES = [
    "(" * 2000,
    "not " * 500,
    "(not " * 400,
    "'" + "a" * 1999,
    "\\" * 2000,
    '"' + "\\u0041" * 333,
    "attributes" + ".a" * 995,
    "attributes" + "['a']" * 398,
    " and ".join(["has attributes.a"] * 95),
    "attributes.a in [" + ",".join(["1"] * 990) + "]",
    "1" * 2000,
    "-" * 2000,
    "9" * 1999 + "e",
    "locale == " + "9" * 1990,
    "a" * 2000,
    "=" * 2000,
    "<" * 2000,
    " " * 2000,
]


@pytest.mark.parametrize("text", WORST_CASES, ids=range(len(WORST_CASES)))
def test_worst_case_inputs_parse_or_fail_quickly(text: str) -> None:
    assert parser_calls(text) <= CALLS_PER_CHAR * (len(text) + 10)


# -- fuzzing -----------------------------------------------------------------------------------------

FUZZ = settings(max_examples=examples(1500), deadline=None, suppress_health_check=[HealthCheck.too_slow])
TOKENS = st.sampled_from(
    ["attributes", ".", "plan", "[", "]", "(", ")", ",", "'pro'", '"x"', "'", '"', "\\", "1", "-2.5e3", "-",
     "true", "false", "==", "!=", "<", "<=", ">", ">=", "=", "!", "in", "has", "not", "and", "or", "tags", "locale",
     "timezone", " ", "\n", "\\u00e9", "é", "\x00", ";"]
)  # fmt: skip
NEAR_MISSES = st.lists(TOKENS | st.text(max_size=3), max_size=40).map(" ".join) | st.lists(TOKENS, max_size=60).map(
    "".join
)


def parses_or_refuses(text: str) -> None:
    assert parser_calls(text) <= CALLS_PER_CHAR * (len(text) + 10)
    try:
        predicate = parse_where(text)
    except ExpressionError as exc:
        assert 0 <= exc.position <= len(text)
    else:
        assert isinstance(predicate(ANN), bool) and isinstance(predicate(BOB), bool)


@FUZZ
@given(st.text(max_size=300))
def test_random_text_only_ever_raises_the_parse_error(text: str) -> None:
    parses_or_refuses(text)


@FUZZ
@given(NEAR_MISSES)
def test_token_soup_only_ever_raises_the_parse_error(text: str) -> None:
    parses_or_refuses(text)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["a", "b", "plan"]), inner, max_size=3),
    max_leaves=8,
)
PROFILES = st.builds(
    lambda attributes, tags, locale: UserProfile(
        client_id="c", user_id="u", attributes=attributes, tags=tags, locale=locale
    ),
    st.dictionaries(st.sampled_from(["a", "b", "plan", "orders"]), JSON, max_size=4),
    st.lists(st.sampled_from(["x", "y", "z"]), max_size=3),
    st.sampled_from(["en", "fr", "fr-CA"]),
)
LITERALS = st.sampled_from(["'x'", '"pro"', "1", "-2.5", "0", "true", "false", "1e3", "'y'"])
ORDERED_LITERALS = LITERALS.filter(lambda v: v not in ("true", "false"))
PATHS = st.lists(st.sampled_from([".a", ".b", ".plan", ".orders", "['a']", "['odd key']"]), min_size=1, max_size=3)
ATTRIBUTE = PATHS.map(lambda steps: "attributes" + "".join(steps))
FIELD = ATTRIBUTE | st.sampled_from(["locale", "timezone"])
TESTS = st.one_of(
    st.tuples(FIELD, st.sampled_from(["==", "!="]), LITERALS).map(" ".join),
    st.tuples(FIELD, st.sampled_from(["<", "<=", ">", ">="]), ORDERED_LITERALS).map(" ".join),
    st.tuples(FIELD, st.lists(LITERALS, max_size=4).map(", ".join)).map(lambda t: f"{t[0]} in [{t[1]}]"),
    st.sampled_from(["'x'", "'y'", "'w'"]).map(lambda tag: f"{tag} in tags"),
    st.tuples(LITERALS, ATTRIBUTE).map(lambda t: f"{t[0]} in {t[1]}"),
    ATTRIBUTE.map(lambda a: f"has {a}"),
)
EXPRESSIONS = st.recursive(
    TESTS,
    lambda inner: st.one_of(
        inner.map(lambda e: f"not ({e})"),
        st.tuples(inner, st.sampled_from(["and", "or"]), inner).map(lambda t: f"({t[0]}) {t[1]} ({t[2]})"),
    ),
    max_leaves=10,
)


@settings(FUZZ, max_examples=examples(400))
@given(EXPRESSIONS, PROFILES)
def test_every_grammatical_expression_parses_and_evaluates_on_any_profile(expression: str, user: UserProfile) -> None:
    result = parse_where(expression)(user)
    assert isinstance(result, bool)
    assert parse_where(f"not ({expression})")(user) is (not result)


@settings(FUZZ, max_examples=examples(400))
@given(EXPRESSIONS, EXPRESSIONS, PROFILES)
def test_and_or_combine_like_booleans(left: str, right: str, user: UserProfile) -> None:
    a, b = parse_where(left)(user), parse_where(right)(user)
    assert parse_where(f"({left}) and ({right})")(user) is (a and b)
    assert parse_where(f"({left}) or ({right})")(user) is (a or b)


# -- Audience ----------------------------------------------------------------------------------------


def test_compile_audience_all_ids_and_where() -> None:
    other = UserProfile(client_id="evil", user_id="ann", tags=["vip"])
    everyone = compile_audience(Audience(all=True))
    assert everyone(ANN) and everyone(other)
    assert not compile_audience(Audience(all=True), client_id="acme")(other)
    listed = compile_audience(Audience(user_ids=["ann", "carl"]))
    assert listed(ANN) and not listed(BOB)
    assert not compile_audience(Audience(user_ids=["ann"]), client_id="acme")(other)
    vip = compile_audience(Audience(where='"vip" in tags'), client_id="acme")
    assert vip(ANN) and not vip(BOB) and not vip(other)
    with pytest.raises(ExpressionError):
        compile_audience(Audience(where="nonsense"))


@pytest.mark.parametrize(
    "fields",
    [{}, {"all": False}, {"all": True, "where": "has attributes.a"}, {"user_ids": ["a"], "where": "x"},
     {"user_ids": []}, {"user_ids": ["u"] * (MAX_USER_IDS + 1)}, {"where": "x" * (MAX_EXPRESSION_CHARS + 1)}],
)  # fmt: skip
def test_an_audience_is_exactly_one_of_its_forms(fields: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        Audience(**fields)
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(msgspec.json.encode(fields), type=Audience)


def test_an_audience_round_trips_as_json() -> None:
    for audience in (Audience(all=True), Audience(user_ids=["a", "b"]), Audience(where="has attributes.a")):
        assert msgspec.json.decode(msgspec.json.encode(audience), type=Audience) == audience


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (None, "audience"),
        ("all", "audience"),
        ([], "audience"),
        ({}, "audience"),
        ({"all": False}, "audience"),
        ({"all": "yes"}, "audience"),
        ({"all": True, "user_ids": ["a"]}, "audience"),
        ({"all": True, "segment": "x"}, "audience"),
        ({"user_ids": "ann"}, "audience.user_ids"),
        ({"user_ids": []}, "audience.user_ids"),
        ({"user_ids": ["ok", "../x"]}, "audience.user_ids"),
        ({"user_ids": ["ok", 7]}, "audience.user_ids"),
        ({"user_ids": [f"u{i}" for i in range(MAX_USER_IDS + 1)]}, "audience.user_ids"),
        ({"where": 7}, "audience.where"),
        ({"where": ["has attributes.a"]}, "audience.where"),
    ],
)
def test_audience_from_body_names_the_field(body: Any, field: str) -> None:
    with pytest.raises(ValidationFailed) as raised:
        audience_from_body(body)
    assert [e["field"] for e in raised.value.errors] == [field]


def test_audience_from_body_accepts_each_form_and_refuses_a_bad_expression() -> None:
    assert audience_from_body({"all": True}) == Audience(all=True)
    assert audience_from_body({"user_ids": ["a", "b", "a"], "all": False}) == Audience(user_ids=["a", "b"])
    assert audience_from_body({"where": "'vip' in tags", "user_ids": None}) == Audience(where="'vip' in tags")
    assert len(audience_from_body({"user_ids": [f"u{i}" for i in range(MAX_USER_IDS)]}).user_ids or []) == MAX_USER_IDS
    with pytest.raises(ExpressionError) as raised:
        audience_from_body({"where": "'vip' in tag"})
    assert raised.value.field == "audience.where" and raised.value.position == 9
