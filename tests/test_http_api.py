"""Every API endpoint, each 4xx case, and the critical path end to end over HTTP."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from clarion.schemas.codec import encode
from clarion.schemas.records import TemplateVersion
from clarion.topology.catalog import catalog
from tests.api_stack import CLIENT, TEMPLATE, Stack, api_stack_fixture
from tests.drain import drained

pytestmark = pytest.mark.asyncio(loop_scope="module")

stack = api_stack_fixture()


async def test_healthz(stack: Stack) -> None:
    status, body = await stack.call("GET", "/healthz")
    assert status == 200 and body["ok"] is True


async def test_notification_is_delivered_exactly_once_and_shows_sent(stack: Stack) -> None:
    status, body = await stack.call("POST", "/notif", stack.notif())
    assert status == 202 and body["status"] == "accepted"
    nid = body["notification_id"]
    doc = await stack.wait_status(nid, {"sent", "failed", "dead_lettered"})
    assert doc["status"] == "sent" and doc["attempts"] == 1
    receipts = [d for d in stack.sim.state.deliveries if d["nid"] == nid]
    assert len(receipts) == 1
    assert receipts[0]["address"] == "alice@example.com" and receipts[0]["text"] == "Your code: 1234"


async def test_same_idempotency_key_twice_is_delivered_once(stack: Stack) -> None:
    body = stack.notif(idempotency_key="pay-42", channels=["sms"])
    first = (await stack.call("POST", "/notif", body))[1]["notification_id"]
    second = (await stack.call("POST", "/notif", body))[1]["notification_id"]
    assert first != second
    dup = await stack.wait_status(second, {"duplicate"})
    assert dup["duplicate_of"] == first
    await stack.wait_status(first, {"sent"})
    await drained(stack.settings)  # everything handled: a second delivery would be there by now
    assert len([d for d in stack.sim.state.deliveries if d["nid"] in (first, second)]) == 1


async def test_traceparent_trace_id_is_kept(stack: Stack) -> None:
    trace = "0af7651916cd43dd8448eb211c80319c"
    headers = {**stack.auth(stack.key), "traceparent": f"00-{trace}-b7ad6b7169203331-01"}
    async with stack.http.post(stack.url + "/notif", json=stack.notif(), headers=headers) as resp:
        assert (await resp.json())["trace_id"] == trace


async def test_unknown_notification_is_404(stack: Stack) -> None:
    status, body = await stack.call("GET", "/notif/n_doesnotexist")
    assert status == 404 and body["notification_id"] == "n_doesnotexist"


def field_of(body: dict[str, Any]) -> set[str]:
    return {e["field"] for e in body["errors"]}


@pytest.mark.parametrize(
    ("change", "status", "field"),
    [
        ({"user_id": None}, 400, "user_id"),
        ({"channels": ["fax"]}, 400, "channels"),
        ({"template_version": -1}, 400, "template_version"),
        ({"template_id": "nope"}, 404, "template_id"),
        ({"template_version": 7}, 404, "template_version"),
        ({"channels": ["apns"]}, 422, "channels"),
        ({"params": {}}, 422, "params"),
    ],
)
async def test_post_notif_errors_name_the_field(stack: Stack, change: dict, status: int, field: str) -> None:
    body = {k: v for k, v in stack.notif(**change).items() if v is not None}
    got_status, got = await stack.call("POST", "/notif", body)
    assert got_status == status
    assert field_of(got) == {field}


async def test_post_notif_bad_json_and_oversize(stack: Stack) -> None:
    status, body = await stack.call("POST", "/notif", raw=b"{not json")
    assert status == 400 and field_of(body) == {"body"}
    status, body = await stack.call("POST", "/notif", stack.notif(params={"code": "x" * 5000}))
    assert status == 413 and field_of(body) == {"body"} and "4096" in body["error"]


async def test_post_template_versions_are_immutable(stack: Stack) -> None:
    assert await stack.call("POST", "/template", TEMPLATE) == (
        200,
        {"template_id": "otp", "version": 1, "created": False},
    )
    status, body = await stack.call("POST", "/template", {**TEMPLATE, "sms_body": "changed"})
    assert status == 409 and field_of(body) == {"version"}
    status, body = await stack.call("POST", "/template", {**TEMPLATE, "version": 2, "sms_body": "v2 {{ code }}"})
    assert status == 201
    # "latest" is what the worker knows when it routes: wait until it holds v2.
    await stack.wait_worker_template("otp", latest=2)
    latest = (await stack.call("POST", "/notif", stack.notif(channels=["sms"])))[1]["notification_id"]
    pinned = (await stack.call("POST", "/notif", stack.notif(channels=["sms"], template_version=1)))[1]
    for nid in (latest, pinned["notification_id"]):
        await stack.wait_status(nid, {"sent"})
    assert [d["body"] for d in stack.sim.state.deliveries if d["nid"] == latest] == ["v2 1234"]
    assert [d["body"] for d in stack.sim.state.deliveries if d["nid"] == pinned["notification_id"]] == ["Code 1234"]


async def test_post_template_rejects_broken_jinja_and_bad_shape(stack: Stack) -> None:
    status, body = await stack.call("POST", "/template", {"template_id": "bad", "version": 1, "sms_body": "{{ oops"})
    assert status == 400 and field_of(body) == {"sms_body"}
    status, body = await stack.call("POST", "/template", {"template_id": "bad", "version": 0})
    assert status == 400 and field_of(body) == {"version", "body"}


async def test_post_users_validation(stack: Stack) -> None:
    assert await stack.call("POST", "/users", {"user_id": "zed", "email": "zed@example.com"}) == (
        202,
        {"user_id": "zed"},
    )
    status, body = await stack.call(
        "POST", "/users", {"user_id": "zed", "email": "not-an-email", "timezone": "Nowhere"}
    )
    assert status == 400 and field_of(body) == {"email", "timezone"}
    status, body = await stack.call("POST", "/users", raw=b"[]")
    assert status == 400 and field_of(body) == {"body"}


async def test_post_notif_batch_answers_per_item_and_delivers_the_good_ones(stack: Stack) -> None:
    good = [stack.notif(channels=["sms"]) for _ in range(3)]
    bad_field = stack.notif(channels=["fax"])
    unknown_template = stack.notif(template_id="nope")
    status, body = await stack.call(
        "POST", "/notif/batch", {"notifications": [good[0], bad_field, *good[1:], unknown_template, 7]}
    )
    assert status == 200 and (body["accepted"], body["rejected"]) == (3, 3)
    results = body["results"]
    assert [r["index"] for r in results] == list(range(6))
    assert [r["status"] for r in results] == [202, 400, 202, 202, 404, 400]
    assert field_of(results[1]) == {"channels"} and field_of(results[4]) == {"template_id"}
    assert field_of(results[5]) == {"body"}
    nids = [r["notification_id"] for r in results if r["status"] == 202]
    for nid in nids:
        await stack.wait_status(nid, {"sent"})
    assert sorted(d["nid"] for d in stack.sim.state.deliveries if d["nid"] in nids) == sorted(nids)


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"notifications": []}, 400),
        ({"notifications": "all of them"}, 400),
        ([1, 2], 400),
        ({"notifications": [{}] * 1001}, 400),
    ],
)
async def test_post_notif_batch_rejects_a_bad_envelope(stack: Stack, body: Any, status: int) -> None:
    got_status, got = await stack.call("POST", "/notif/batch", body)
    assert got_status == status and field_of(got) == {"notifications"}


async def test_post_notif_batch_has_its_own_size_limit(stack: Stack) -> None:
    items = [stack.notif(params={"code": "x" * 3000}) for _ in range(3)]  # each under POST /notif's 4 KiB
    status, body = await stack.call("POST", "/notif/batch", {"notifications": items})
    assert status == 200 and body["accepted"] == 3
    status, body = await stack.call("POST", "/notif/batch", raw=b"[" + b" " * (5 * 1024 * 1024) + b"]")
    assert status == 413 and field_of(body) == {"body"}


@pytest.mark.parametrize(
    "nid",
    [
        "..%2F..%2Ftemplates%2Fotp",  # decodes to ../../templates/otp: once forwarded to the worker's templates page
        "..",
        "%2E%2E",
        "n0_x%2F..%2F..%2Fready",
        "a%20b",
        "x%0A",
        "a" * 129,
        "%C3%A9t%C3%A9",
    ],
)
async def test_get_notif_malformed_id_is_404_json_and_never_forwarded(stack: Stack, nid: str) -> None:
    status, body = await stack.call("GET", f"/notif/{nid}")
    assert status == 404 and field_of(body) == {"notification_id"}
    assert body["error"] == "unknown notification_id" and "versions" not in body and "ready" not in body


async def test_get_notif_id_with_colon_and_at_reaches_the_worker_intact(stack: Stack) -> None:
    status, body = await stack.call("GET", "/notif/ext:a@b.c-1")
    assert status == 404 and body["notification_id"] == "ext:a@b.c-1"  # the worker's answer, quoted id round-tripped


@pytest.mark.parametrize(
    ("method", "path", "status", "field"),
    [
        ("GET", "/nope", 404, "path"),
        ("GET", "/notif/a/b", 404, "path"),
        ("POST", "/templates/otp/", 404, "path"),
        ("GET", "/notif", 405, "method"),
        ("DELETE", "/notif/batch", 405, "method"),
        ("PUT", "/users", 405, "method"),
        ("POST", "/healthz", 405, "method"),
    ],
)
async def test_unknown_paths_and_wrong_methods_answer_json(
    stack: Stack, method: str, path: str, status: int, field: str
) -> None:
    async with stack.http.request(method, stack.url + path, headers=stack.auth(stack.key)) as resp:
        assert resp.status == status and resp.content_type == "application/json"
        body = await resp.json()
        if status == 405:
            assert resp.headers["Allow"] in body["error"]
    assert field_of(body) == {field}


@pytest.mark.parametrize("timezone", ["Europe", "a" * 300, "Europe/", "../zoneinfo/UTC", "", 7])
async def test_post_users_unknown_timezone_is_400(stack: Stack, timezone: Any) -> None:
    status, body = await stack.call("POST", "/users", {"user_id": "tz", "timezone": timezone})
    assert status == 400 and field_of(body) == {"timezone"}


def nested(depth: int) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    for _ in range(depth - 1):
        doc = {"a": doc}
    return doc


@pytest.mark.parametrize(
    ("params", "error"),
    [
        (nested(9), "nested deeper than 8"),
        (nested(300), "nested deeper than 8"),  # was a 500 past ~990 levels (msgspec recursion)
        ({"list": [[[[[[[[[]]]]]]]]]}, "nested deeper than 8"),
        ({f"k{i}": i for i in range(101)}, "more than 100 entries"),
        ({"code": {"x" * 129: 1}}, "over 128 characters"),
        ({"code": ["x" * 200] * 90}, "over 16384 bytes"),
        ({"a-b": 1}, "name 'a-b'"),
        ({"1x": 1}, "name '1x'"),
        ({"": 1}, "name ''"),
        ({"x" * 65: 1}, "must be a letter or _"),
    ],
)
async def test_post_notif_params_over_a_limit_is_400(stack: Stack, params: dict[str, Any], error: str) -> None:
    status, body = await stack.call("POST", "/notif/batch", {"notifications": [stack.notif(params=params)]})
    assert status == 200
    [result] = body["results"]
    assert result["status"] == 400 and field_of(result) == {"params"}
    assert error in result["errors"][0]["error"]


async def test_post_users_attributes_over_a_limit_is_400(stack: Stack) -> None:
    for attributes in (nested(9), nested(300), {"k" * 129: 1}):  # the size limit: test_schemas (4 KiB bodies here)
        status, body = await stack.call("POST", "/users", {"user_id": "attrs", "attributes": attributes})
        assert status == 400 and field_of(body) == {"attributes"}
    status, _ = await stack.call("POST", "/users", {"user_id": "attrs", "attributes": {"plan-tier": {"a": [1, 2]}}})
    assert status == 202


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br"])
async def test_a_compressed_body_is_415_json(stack: Stack, encoding: str) -> None:
    """aiohttp's own decoding answered text/plain (br), 500 (gzip of junk) or hung (truncated deflate)."""
    async with stack.http.post(
        stack.url + "/notif", data=b"\x08", headers={**stack.auth(stack.key), "Content-Encoding": encoding}
    ) as resp:
        assert resp.status == 415 and field_of(await resp.json()) == {"body"}


async def test_a_template_that_breaks_the_compiler_is_400_naming_the_part(stack: Stack) -> None:
    deep = "{{ " + "(" * 400 + "1" + ")" * 400 + " }}"  # RecursionError in Jinja2's parser: was a 500
    status, body = await stack.call("POST", "/template", {"template_id": "deep", "version": 1, "sms_body": deep})
    assert status == 400 and field_of(body) == {"sms_body"}


async def test_params_a_template_cannot_render_are_422_not_500(stack: Stack) -> None:
    template = {"template_id": "plus", "version": 1, "sms_body": "{{ n + 1 }}"}
    assert (await stack.call("POST", "/template", template))[0] == 201
    body = stack.notif(template_id="plus", channels=["sms"], params={"n": "text"})  # TypeError inside the template
    status, got = await stack.call("POST", "/notif", body)
    assert status == 422 and field_of(got) == {"params"}


async def test_worker_pages_refuse_malformed_ids(stack: Stack) -> None:
    for path in ("/status/a%20b/", "/status/%2E%2E/", "/status/..%2F/", "/templates/a%2Fb/", "/templates/x%0A/"):
        status, body = await stack.worker_page(path)
        assert status == 404 and "error" in body, path


async def test_worker_templates_page_lists_held_versions_of_a_huge_version_at_once(stack: Stack) -> None:
    """A version of 10**12 on the topic (the API may refuse it; the topic need not) must not freeze the page."""
    topic = catalog(stack.settings)["templates"].topic
    producer = AIOKafkaProducer(bootstrap_servers=stack.settings.bootstrap_servers)
    await producer.start()
    try:
        for version in (1, 10**12):
            big = TemplateVersion(client_id=CLIENT, template_id="big", version=version, sms_body="v")
            await producer.send_and_wait(topic, encode(big), key=big.key.encode())
    finally:
        await producer.stop()
    await stack.wait_worker_template("big", latest=10**12)
    async with asyncio.timeout(10):  # a page that walked every version up to 10**12 would never answer
        assert await stack.worker_page("/templates/big/") == (
            200,
            {"template_id": "big", "latest": 10**12, "versions": [1, 10**12]},
        )


async def test_a_notification_posted_right_after_its_template_is_delivered(stack: Stack) -> None:
    """The request carries the templates offset the API checked; the worker waits to have read it."""
    nids = []
    for i in range(5):
        template = {"template_id": f"fresh-{time.monotonic_ns()}-{i}", "version": 1, "sms_body": "New {{ code }}"}
        assert (await stack.call("POST", "/template", template))[0] == 201
        status, body = await stack.call(
            "POST", "/notif", stack.notif(template_id=template["template_id"], channels=["sms"])
        )
        assert status == 202
        nids.append(body["notification_id"])
    for nid in nids:
        assert (await stack.wait_status(nid, {"sent", "failed"}))["status"] == "sent"
