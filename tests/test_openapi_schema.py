"""The OpenAPI description against the code it describes, without a broker.

- Every route the API registers has an operation, with the security its handler's mark gives it.
- The validators and the schema agree: request bodies schemathesis generates from the schema
  (positive mode) are accepted by the functions the handlers call, or refused only for a rule the
  operation lists under `x-beyond-schema` (same field, same status); bodies that break the schema
  (negative mode, each one checked invalid with jsonschema_rs) are refused with 400 or 422 (403 for
  another client_id); and, field by field, a body the schema admits with that one field changed to one it
  refuses (often a near miss of its pattern: a trailing newline, a space, one character less...) is
  refused naming that field. A body travels as it would over HTTP: encoded by a client, read by orjson.
- RFC 3339 timestamps: the validators read exactly the strings the schema's "date-time" admits.
- /docs lists every operation and schema and loads nothing from elsewhere.

The handlers themselves, batch and bulk included, are exercised over HTTP by tests/test_openapi.py.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import jsonschema_rs
import orjson
import pytest
import schemathesis
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from clarion.schemas.audiences import ExpressionError, audience_from_body
from clarion.schemas.promo_validation import validate_campaign
from clarion.schemas.records import TemplateVersion
from clarion.schemas.validation import (
    TEMPLATE_PARTS,
    ValidationFailed,
    parse_timestamp,
    validate_template,
    validate_user,
)
from clarion.tables.api_keys import SCOPES, Caller
from clarion.tables.templates import check_template
from clarion.tables.templates_view import TemplatesView
from clarion.topology.settings import Settings
from clarion.web.api import accept_notification, create_api
from clarion.web.context import PARTITIONS, TEMPLATES, Rejected, claim
from clarion.web.openapi import build_spec
from clarion.web.openapi_docs import render_docs
from tests.budget import examples

CLIENT = "web"
CALLER = Caller(client_id=CLIENT, key_id="0123456789abcdef", scopes=frozenset(SCOPES))
KNOWN = TemplateVersion(client_id=CLIENT, template_id="t", version=1, email_subject="Hi", email_text="Hello",
                        push_title="T", push_body="B", sms_body="S")  # fmt: skip
AGREEMENT = settings(
    max_examples=examples(80),
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
NEGATIVE = settings(AGREEMENT, max_examples=examples(60))

APP = create_api(Settings())
SPEC = build_spec(APP)
SCHEMA = schemathesis.openapi.from_dict(SPEC)


def _templates() -> TemplatesView:
    view = TemplatesView("127.0.0.1:1", "templates")
    view.add(KNOWN, 0)
    return view


CHECKED_APP: dict[Any, Any] = {TEMPLATES: _templates(), PARTITIONS: 2}  # what accept_notification reads of the app


def _notif(body: Any) -> None:
    accept_notification(CHECKED_APP, body, CALLER, "0" * 32, time.time())  # type: ignore[arg-type]


def _user(body: Any) -> None:
    claim(body, CALLER)
    validate_user(body, CLIENT)


def _template(body: Any) -> None:
    claim(body, CALLER)
    check_template(validate_template(body, CLIENT))


def _campaign(body: Any) -> None:
    claim(body, CALLER)
    validate_campaign(body, CLIENT, time.time())


def _preview(body: Any) -> None:  # web/preview.py's checks, in its order
    claim(body, CALLER)
    if not isinstance(body, dict):
        raise ValidationFailed([{"field": "body", "error": "must be a JSON object"}])
    audience_from_body(body.get("audience"))


CHECKS: dict[str, Callable[[Any], None]] = {
    "/notif": _notif,
    "/users": _user,
    "/template": _template,
    "/promo": _campaign,
    "/audiences/preview": _preview,
}


def refusal(check: Callable[[Any], None], body: Any) -> tuple[int, set[str]] | None:
    """None when `check` accepts `body`; else the status the API answers and the fields it names."""
    try:
        check(body)
    except ValidationFailed as exc:
        return 400, {e["field"] for e in exc.errors}
    except ExpressionError:
        return 422, {ExpressionError.field}
    except Rejected as exc:
        return exc.status, {exc.field or ""}
    return None


def over_http(body: Any) -> Any:
    """The body as the server reads it: JSON encoded by a client, decoded by orjson."""
    return orjson.loads(json.dumps(body))


def body_validator(path: str) -> jsonschema_rs.Validator:
    schema = SPEC["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
    return jsonschema_rs.validator_for({**schema, "components": SPEC["components"]}, validate_formats=True)


def test_every_route_has_an_operation_with_its_handlers_security() -> None:
    routes = list(APP.router.routes())
    assert len(routes) > 20
    for route in routes:
        path, method = route.resource.canonical, route.method.lower()
        op = SPEC["paths"].get(path, {}).get(method)
        assert op is not None, f"{route.method} {path} has no OpenAPI operation"
        assert not op.get("x-undocumented"), f"{route.method} {path}: describe it in clarion/web/openapi_ops.py"
        if getattr(route.handler, "public", False):
            assert op["security"] == [] and "401" not in op["responses"], path
        else:
            assert op["security"] == [{"bearer": []}] and op["x-scope"] == route.handler.scope, path
            assert {"401", "403"} <= set(op["responses"]), path
    documented = {(path, method) for path, methods in SPEC["paths"].items() for method in methods}
    assert documented == {(r.resource.canonical, r.method.lower()) for r in routes}


def test_errors_have_the_error_shape_and_bodies_name_the_models() -> None:
    error_ref = {"$ref": "#/components/schemas/Error"}
    assert set(SPEC["components"]["schemas"]["Error"]["required"]) == {"error"}
    assert SPEC["components"]["schemas"]["FieldError"]["required"] == ["field", "error"]
    for path, methods in SPEC["paths"].items():
        for method, op in methods.items():
            for status, answer in op["responses"].items():
                if int(status) >= 400 and method != "head" and path not in ("/users/bulk", "/ready"):  # their own
                    assert answer["content"]["application/json"]["schema"] == error_ref, (method, path, status)
    for path, struct in {"/notif": "NotificationBody", "/users": "UserBody", "/template": "TemplateBody",
                         "/promo": "CampaignBody", "/notif/batch": "NotificationBatchBody"}.items():  # fmt: skip
        body = SPEC["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert body == {"$ref": f"#/components/schemas/{struct}"}
    batch = SPEC["components"]["schemas"]["NotificationBatchBody"]["properties"]["notifications"]
    assert batch["maxItems"] == Settings().max_batch_items


def test_schemathesis_reads_every_operation() -> None:
    results = list(SCHEMA.get_all_operations())
    assert len(results) == sum(len(methods) for methods in SPEC["paths"].values())
    for result in results:
        result.ok()  # raises on an operation schemathesis cannot read


@pytest.mark.parametrize("path", sorted(CHECKS))
def test_bodies_the_schema_admits_are_accepted_or_refused_for_a_listed_rule(path: str) -> None:
    operation = SCHEMA[path]["POST"]
    positive = operation.as_strategy(GenerationMode.POSITIVE)  # built once: building it is most of a draw's cost
    beyond = {(rule["field"], rule["status"]) for rule in SPEC["paths"][path]["post"].get("x-beyond-schema", [])}
    valid = body_validator(path)
    outcomes = {"accepted": 0, "refused": 0}

    @AGREEMENT
    @given(data=st.data())
    def check(data: st.DataObject) -> None:
        body = data.draw(positive).body
        assert valid.is_valid(body), body
        if path == "/notif" and data.draw(st.booleans()):  # a template that exists, so the rest is checked too
            body = {**body, "template_id": KNOWN.template_id, "template_version": data.draw(st.sampled_from([None, 1]))}
        got = refusal(CHECKS[path], over_http(body))
        outcomes["accepted" if got is None else "refused"] += 1
        if got is not None:
            status, fields = got
            assert {(field, status) for field in fields} <= beyond, f"{path} refused {body!r}: {got}"

    check()
    assert outcomes["accepted"] >= 5, outcomes  # the check ran on bodies the API takes, not only on refusals


@pytest.mark.parametrize("path", sorted(CHECKS))
def test_bodies_the_schema_refuses_are_refused(path: str) -> None:
    operation = SCHEMA[path]["POST"]
    negative = operation.as_strategy(GenerationMode.NEGATIVE)
    valid = body_validator(path)
    seen = {"invalid": 0}

    @NEGATIVE
    @given(data=st.data())
    def check(data: st.DataObject) -> None:
        body = data.draw(negative).body
        assume(not isinstance(body, bytes) and not valid.is_valid(body))  # negative in the body, not elsewhere
        seen["invalid"] += 1
        got = refusal(CHECKS[path], over_http(body))
        assert got is not None, f"{path} accepted a body the schema refuses: {body!r}"
        other_client = isinstance(body, dict) and "client_id" in body and body["client_id"] != CLIENT
        assert got[0] in (400, 422) or (got[0] == 403 and other_client), f"{path}: {body!r} -> {got}"

    check()
    assert seen["invalid"] >= examples(40), seen


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)
EDITS = [lambda v: v + "\n", lambda v: " " + v, lambda v: v[:-1], lambda v: v + "\x00", lambda v: v.upper(),
         lambda v: v + "é", lambda v: v * 70, lambda v: "." * len(v)]  # fmt: skip
# Fields whose refusal may name another: the old spelling names the field it stands for; template parts are
# tied by the rules on the whole body (at least one part; email needs a subject and a text or HTML part).
NAMED_AS = {"channel": {"channels"}, **{part: {*TEMPLATE_PARTS, "body"} for part in TEMPLATE_PARTS}}


def _component(path: str) -> dict[str, Any]:
    ref = SPEC["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    return SPEC["components"]["schemas"][ref.rsplit("/", 1)[-1]]


FIELDS = [(path, field) for path in sorted(CHECKS) for field, schema in sorted(_component(path)["properties"].items())
          if schema.keys() - {"description", "deprecated", "default"}]  # a field the schema constrains at all


def _pattern(schema: dict[str, Any]) -> tuple[str, bool] | None:
    """The pattern a field's strings must match, and whether they are items of a list."""
    if "pattern" in schema:
        return schema["pattern"], False
    if "items" in schema and (found := _pattern(schema["items"])):
        return found[0], True
    return next((found for sub in schema.get("anyOf", ()) if (found := _pattern(sub))), None)


def _near_miss(current: Any, schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """A valid string of the field (the body's, or one matching its pattern) edited a little."""
    found = _pattern(schema)
    if isinstance(current, str) and current:
        base: st.SearchStrategy[str] = st.just(current)
    elif found:
        base = st.from_regex(found[0], fullmatch=True).filter(bool)
    else:
        return JSON
    edited = base.flatmap(lambda value: st.sampled_from(EDITS).map(lambda edit: edit(value)))
    return edited.map(lambda value: [value]) if found and found[1] else edited


@pytest.mark.parametrize(("path", "field"), FIELDS)
def test_a_field_the_schema_refuses_is_refused_and_named(path: str, field: str) -> None:
    """One field of an accepted body changed to a value the schema refuses: the refusal names that field."""
    positive = SCHEMA[path]["POST"].as_strategy(GenerationMode.POSITIVE)
    valid = body_validator(path)
    seen = {"refused": 0}

    @settings(AGREEMENT, max_examples=examples(15))
    @given(data=st.data())
    def check(data: st.DataObject) -> None:
        body = dict(data.draw(positive).body)
        body.pop("client_id", None)  # another client's would be refused (403) before any field is read
        body[field] = data.draw(_near_miss(body.get(field), _component(path)["properties"][field]) | JSON)
        sent = over_http(body)
        assume(not valid.is_valid(sent))
        got = refusal(CHECKS[path], sent)
        assert got is not None, f"{path} accepted {field}={body[field]!r}, which the schema refuses"
        named = NAMED_AS.get(field, {field})
        assert any(f.split(".")[0] in named for f in got[1]), f"{path}: {field}={body[field]!r} -> {got}"
        seen["refused"] += 1

    check()
    assert seen["refused"] >= 5, seen


DATE_TIME = jsonschema_rs.validator_for({"type": "string", "format": "date-time"}, validate_formats=True)


@settings(max_examples=examples(1000), deadline=None, derandomize=True, database=None)
@given(st.from_regex(r"\A[0-9]{4}-[01][0-9]-[0-3][0-9][Tt ][0-2][0-9]:[0-6][0-9]:[0-6][0-9](\.[0-9]{1,12})?"
                     r"([Zz]|[+-][0-2][0-9]:[0-6][0-9]|[+-][0-9]{4})?\Z"))  # fmt: skip
def test_timestamps_are_read_exactly_when_the_schema_admits_them(text: str) -> None:
    try:
        parse_timestamp(text)
        read = True
    except ValueError:
        read = False
    assert read == DATE_TIME.is_valid(text), text


def test_timestamps_are_read_to_the_right_second() -> None:
    assert parse_timestamp("2030-01-01T00:00:00Z") == 1893456000.0
    assert parse_timestamp("2030-01-01t01:00:00.25+01:00") == 1893456000.25
    assert parse_timestamp("2030-06-30T23:59:60Z") == parse_timestamp("2030-07-01T00:00:00Z")
    assert parse_timestamp("0000-01-01T00:00:00Z") == -62167219200.0  # the proleptic Gregorian year 0


def test_the_docs_page_shows_every_operation_and_schema_and_loads_nothing() -> None:
    page = render_docs(SPEC)
    for path, methods in SPEC["paths"].items():
        for op in methods.values():
            assert f'id="op-{op["operationId"]}"' in page, path
    for name in SPEC["components"]["schemas"]:
        assert f'id="schema-{name}"' in page
    lowered = page.lower()
    for loads_or_runs in ("<script", "http://", "https://", "@import", "src="):
        assert loads_or_runs not in lowered
