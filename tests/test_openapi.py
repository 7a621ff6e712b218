"""The OpenAPI description served by a real API on the embedded stack, and schemathesis run against it.

/openapi.json and /docs answer without a key. Then schemathesis generates requests for every
operation the live description lists, from its schemas, and sends them with the stack's API key
(every scope): bodies that fit the schema (positive) for every operation, and bodies that break it
(negative) for every JSON body. Each answer must not be a 5xx, must have a status the operation
documents, and a body and Content-Type matching what it documents (schemathesis's
not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance).
A negative body that jsonschema_rs confirms breaks the schema must be refused: 400 or 422 (413 when
it is over the byte limit), 403 when it names another client_id, 404/409 where a dashboard endpoint
looks its target up first; a batch may answer 200 with the broken item refused in its result (as
documented). The webhooks are run too:
they answer 403 to anything not signed by the provider, which their operations document.

Bounded: a fixed seed, a few examples per operation and mode, no shrinking, and a budget (BUDGET_S)
that fails the test when passed; the run takes ~12 s here (~600 requests).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import jsonschema_rs
import orjson
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    response_schema_conformance,
    status_code_conformance,
)

from tests.api_stack import Stack, api_stack_fixture

pytestmark = [
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.filterwarnings("ignore:Do not use the `random` module:hypothesis.errors.HypothesisDeprecationWarning"),
]  # schemathesis's own strategies draw from `random`
stack = api_stack_fixture()
schemathesis.serializer.alias("application/x-ndjson", "text/plain")  # POST /users/bulk: JSON lines as text

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          ignored_auth]  # a 2xx with the key is asked again without it, and with a wrong one: both must be refused
EXAMPLES = {"get": 8, "post": 20, "head": 2, "negative": 30}  # per operation
REFUSED = {400, 413, 422}  # 413: over the byte limit, checked before any field (the stack's is 4 KiB)
LOOKS_UP_FIRST = {404, 409}  # dashboard endpoints find the template or letter before checking the rest
BUDGET_S = 90.0


async def test_the_description_and_its_page_are_public(stack: Stack) -> None:
    async with stack.http.get(f"{stack.url}/openapi.json") as resp:  # no Authorization header
        assert resp.status == 200 and resp.content_type == "application/json"
        spec = await resp.json()
    assert spec["openapi"] == "3.1.0"
    assert spec["paths"]["/notif"]["post"]["security"] == [{"bearer": []}]
    assert spec["paths"]["/openapi.json"]["get"]["security"] == []
    async with stack.http.get(f"{stack.url}/docs") as resp:
        assert resp.status == 200 and resp.content_type == "text/html"
        page = await resp.text()
        assert "default-src 'none'" in resp.headers["Content-Security-Policy"]
    assert "/notif/{notification_id}" in page and 'id="schema-NotificationBody"' in page


async def test_schemathesis_finds_no_server_error_and_no_answer_outside_the_schema(stack: Stack) -> None:
    async with stack.http.get(f"{stack.url}/openapi.json") as resp:
        spec = await resp.json()
    started = time.monotonic()
    report = await asyncio.to_thread(run_schemathesis, spec, stack.url, stack.key)
    print(f"schemathesis: {report['requests']} requests in {time.monotonic() - started:.1f} s", report["statuses"],
          report.get("refused_by"))
    assert not report["failures"], "\n\n".join(report["failures"])
    assert report["requests"] >= 500
    assert report["negative_refused"] >= 50  # schema-invalid bodies were sent and refused, not only valid ones
    assert {200, 202, 400, 403, 404} <= set(report["statuses"])  # accepted, refused, unknown template


def run_schemathesis(spec: dict[str, Any], url: str, key: str) -> dict[str, Any]:
    """Every operation of `spec`, positive then (JSON bodies) negative, against the API at `url`."""
    schema = schemathesis.openapi.from_dict(spec)
    report: dict[str, Any] = {"failures": [], "requests": 0, "statuses": {}, "negative_refused": 0}
    deadline = time.monotonic() + BUDGET_S
    with requests.Session() as session:
        for result in schema.get_all_operations():
            operation = result.ok()
            method, path = operation.method.lower(), operation.path
            body_schema = _json_body_schema(spec, method, path)
            modes = [GenerationMode.POSITIVE] + ([GenerationMode.NEGATIVE] if body_schema else [])
            for mode in modes:
                if time.monotonic() > deadline:
                    report["failures"].append(f"out of time before {method.upper()} {path} ({mode.value})")
                    return report
                check = _negative_check(spec, body_schema, path) if mode is GenerationMode.NEGATIVE else None
                examples = EXAMPLES["negative" if check else method]
                _run(operation, mode, examples, session, url, key, check, report)
    return report


def _run(operation: Any, mode: GenerationMode, examples: int, session: requests.Session, url: str, key: str,
         check: Any, report: dict[str, Any]) -> None:  # fmt: skip
    @settings(max_examples=examples, deadline=None, derandomize=True, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(case=operation.as_strategy(generation_mode=mode))
    def send(case: Any) -> None:
        response = case.call(base_url=url, session=session, headers={"Authorization": f"Bearer {key}"},
                             allow_redirects=False, timeout=15)  # fmt: skip
        report["requests"] += 1
        report["statuses"][response.status_code] = report["statuses"].get(response.status_code, 0) + 1
        case.validate_response(response, checks=CHECKS)
        if check is not None:
            check(case, response, report)

    try:
        send()
    except (Exception, BaseExceptionGroup) as exc:  # every operation is run; the failures are reported together
        report["failures"].append(f"{operation.method.upper()} {operation.path} ({mode.value}): {exc}"[:3000])


def _json_body_schema(spec: dict[str, Any], method: str, path: str) -> dict[str, Any] | None:
    """The JSON body schema of an API-key operation (webhooks answer 403 before reading a body's fields)."""
    op = spec["paths"][path][method]
    body = op.get("requestBody", {}).get("content", {}).get("application/json")
    return body["schema"] if body and op["security"] else None


def _negative_check(spec: dict[str, Any], body_schema: dict[str, Any] | None, path: str) -> Any:
    valid = jsonschema_rs.validator_for({**(body_schema or {}), "components": spec["components"]},
                                        validate_formats=True)  # fmt: skip
    allowed = REFUSED | (LOOKS_UP_FIRST if path.startswith("/ui/") else set())

    def check(case: Any, response: Any, report: dict[str, Any]) -> None:
        body = case.body
        if "Authorization" not in response.request.headers:
            return  # schemathesis left the key out (negative security): a 401, which the schema documents
        if case.media_type != "application/json" or isinstance(body, bytes) or valid.is_valid(_as_sent(body)):
            return  # negative elsewhere (media type, raw bytes) or not negative after all: no claim to check
        status = response.status_code
        other_client = isinstance(body, dict) and "client_id" in body and body["client_id"] != "web"
        if path == "/notif/batch" and status == 200:
            refused_items = [r for r in response.json()["results"] if r["status"] != 202]
            assert refused_items, f"a batch breaking the schema was taken whole: {body!r}"[:2000]
        else:
            assert status in allowed or (status == 403 and other_client), (
                f"{path}: a body breaking the schema got {status}: {body!r}"[:2000]
            )
        report["negative_refused"] += 1
        report.setdefault("refused_by", {}).setdefault(path, set()).add(status)

    return check


def _as_sent(body: Any) -> Any:
    """The body as the API reads it: encoded by the client, decoded by orjson."""
    return orjson.loads(json.dumps(body))
