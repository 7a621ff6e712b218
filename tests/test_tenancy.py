"""API keys and tenancy: each attack found on an open API is refused, and the victim's notification is delivered once.

Client "web" (the stack's key) is the victim; client "mallory" has a key of her own.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from typing import Any

import pytest

from clarion.keys import list_keys, revoke_key
from tests.api_stack import TEMPLATE, USER, Stack, api_stack_fixture
from tests.conftest import run_clarion

pytestmark = pytest.mark.asyncio(loop_scope="module")

stack = api_stack_fixture(max_template_versions=3, max_templates=5)

ENDPOINTS = [
    ("POST", "/notif", {}),
    ("POST", "/notif/batch", {"notifications": []}),
    ("POST", "/template", TEMPLATE),
    ("POST", "/users", USER),
    ("POST", "/users/bulk", USER),  # a JSON body: 415 once the key is accepted (tests/test_users_bulk.py)
    ("GET", "/notif/n0_abc", None),
]


def receipts(stack: Stack, nid: str) -> list[dict[str, Any]]:
    return [d for d in stack.sim.state.deliveries if d["nid"] == nid]


@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS)
@pytest.mark.parametrize("key", [None, "", "clk_0123456789abcdef_" + "x" * 43, "Basic dXNlcjpwYXNz", "not-a-key"])
async def test_every_endpoint_needs_a_valid_key(stack: Stack, method: str, path: str, body: Any, key: str) -> None:
    headers = {"Authorization": key} if key and " " in key else stack.auth(key)
    async with stack.http.request(method, stack.url + path, json=body, headers=headers) as resp:
        assert resp.status == 401, (method, path, key)
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        assert (await resp.json())["errors"][0]["field"] == "Authorization"


async def test_healthz_and_ready_answer_without_a_key(stack: Stack) -> None:
    status, body = await stack.call("GET", "/healthz", key=None)
    assert status == 200 and body["ok"] is True
    status, body = await stack.call("GET", "/ready", key=None)
    assert status == 200 and body["ready"] is True  # tests/test_health.py: what it checked


@pytest.mark.parametrize(
    ("scopes", "allowed"),
    [(["send"], {"/notif", "/notif/batch"}), (["read"], {"/notif/n0_abc"}), (["users"], {"/users", "/users/bulk"}),
     (["templates"], {"/template"})],
)  # fmt: skip
async def test_a_key_without_the_scope_is_403(stack: Stack, scopes: list[str], allowed: set[str]) -> None:
    key = await stack.new_key("scoped", scopes)
    for method, path, body in ENDPOINTS:
        status, got = await stack.call(method, path, body, key=key)
        if path in allowed:
            assert status not in (401, 403), (path, got)
        else:
            assert status == 403 and "scope" in got["error"], (path, got)


async def test_a_body_naming_another_client_is_403(stack: Stack) -> None:
    for method, path, body in [
        ("POST", "/notif", stack.notif(client_id="other")),
        ("POST", "/users", {**USER, "client_id": "other"}),
        ("POST", "/template", {**TEMPLATE, "client_id": "other"}),
    ]:
        status, got = await stack.call(method, path, body)
        assert status == 403 and got["errors"][0]["field"] == "client_id", path
    status, got = await stack.call("POST", "/notif/batch", {"notifications": [stack.notif(client_id="other")]})
    assert status == 200 and got["results"][0]["status"] == 403
    assert (await stack.call("POST", "/notif", stack.notif(client_id="web")))[0] == 202  # its own name is fine


async def test_a_revoked_key_stops_working(stack: Stack) -> None:
    key = await stack.new_key("short-lived", ["read"])
    assert (await stack.call("GET", "/notif/n0_abc", key=key))[0] == 404
    key_id = key.split("_")[1]
    assert (await revoke_key(stack.settings, key_id)).revoked_at is not None
    deadline = time.monotonic() + 5
    while (status := (await stack.call("GET", "/notif/n0_abc", key=key))[0]) != 401 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert status == 401
    stored = {k.key_id: k for k in await list_keys(stack.settings)}[key_id]
    assert stored.client_id == "short-lived" and key.split("_", 2)[2] not in stored.secret_sha256  # only a hash


async def test_rewriting_a_victims_user_changes_only_the_attackers_own(stack: Stack) -> None:
    """Was: POST /users for someone else's user sent their next one-time code to the attacker's phone."""
    mallory = await stack.new_key("mallory")
    status, _ = await stack.call("POST", "/users", {"user_id": "alice", "phone": "+14155559999"}, key=mallory)
    assert status == 202
    body = stack.notif(channels=["sms"])
    status, got = await stack.call("POST", "/notif", body)
    assert status == 202
    await stack.wait_status(got["notification_id"], {"sent"})
    assert [r["address"] for r in receipts(stack, got["notification_id"])] == [USER["phone"]]


async def test_publishing_a_victims_template_name_does_not_reach_their_sends(stack: Stack) -> None:
    """Was: v2 of someone else's template put a phishing link into their unpinned sends."""
    mallory = await stack.new_key("mallory")
    phish = {**TEMPLATE, "version": 7, "sms_body": "Log in at evil.example {{ code }}"}
    assert (await stack.call("POST", "/template", phish, key=mallory))[0] == 201
    status, got = await stack.call("POST", "/notif", stack.notif(channels=["sms"]))
    assert status == 202
    await stack.wait_status(got["notification_id"], {"sent"})
    assert [r["body"] for r in receipts(stack, got["notification_id"])] == ["Code 1234"]
    # and the attacker cannot send with the victim's template either: hers is the only "otp" she sees
    pinned = stack.notif(channels=["sms"], template_version=1)
    assert (await stack.call("POST", "/notif", pinned, key=mallory))[0] == 404


async def test_taking_a_victims_idempotency_key_first_does_not_suppress_their_request(stack: Stack) -> None:
    """Was: posting another client's idempotency key first made the real request end `duplicate`."""
    mallory = await stack.new_key("mallory")
    assert (await stack.call("POST", "/users", {"user_id": "alice", "phone": "+14155559999"}, key=mallory))[0] == 202
    assert (await stack.call("POST", "/template", TEMPLATE, key=mallory))[0] in (200, 201)
    body = stack.notif(idempotency_key="order-77", channels=["sms"])
    status, squatted = await stack.call("POST", "/notif", body, key=mallory)
    assert status == 202
    await stack.wait_status(squatted["notification_id"], {"sent"}, key=mallory)
    status, got = await stack.call("POST", "/notif", body)
    doc = await stack.wait_status(got["notification_id"], {"sent", "duplicate"})
    assert doc["status"] == "sent" and doc["duplicate_of"] is None
    assert [r["address"] for r in receipts(stack, got["notification_id"])] == [USER["phone"]]


async def test_another_clients_notification_is_404_at_the_api_and_the_worker(stack: Stack) -> None:
    """Was: GET /notif/{id} showed any notification."""
    status, got = await stack.call("POST", "/notif", stack.notif())
    nid = got["notification_id"]
    await stack.wait_status(nid, {"sent"})
    mallory = await stack.new_key("mallory")
    status, body = await stack.call("GET", f"/notif/{nid}", key=mallory)
    assert status == 404 and "alice" not in str(body)
    assert (await stack.worker_page(f"/status/{nid}/", key=mallory))[0] == 404
    assert (await stack.worker_page(f"/status/{nid}/", key=None))[0] == 401
    status, body = await stack.worker_page(f"/status/{nid}/")
    assert status == 200 and body["user_id"] == "alice"


async def test_worker_template_pages_show_only_the_callers_templates(stack: Stack) -> None:
    eve = await stack.new_key("eve")
    assert (await stack.call("POST", "/template", {**TEMPLATE, "template_id": "eve-only"}, key=eve))[0] == 201
    assert (await stack.worker_page("/templates/", key=None))[0] == 401
    deadline = time.monotonic() + 10
    while (await stack.worker_page("/templates/eve-only/", key=eve))[0] != 200:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    assert (await stack.worker_page("/templates/", key=eve))[1]["versions"] == ["eve-only@1"]
    status, theirs = await stack.worker_page("/templates/")
    assert status == 200 and "otp@1" in theirs["versions"] and "eve-only@1" not in theirs["versions"]
    assert (await stack.worker_page("/templates/eve-only/"))[0] == 404


def clarion_keys(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return run_clarion(stack.settings, "keys", *args)


async def test_the_keys_command_creates_lists_and_revokes(stack: Stack) -> None:
    created = await asyncio.to_thread(clarion_keys, stack, "create", "cli-client", "--scopes", "read", "--name", "ci")
    assert created.returncode == 0, created.stderr
    key = next(line.split(": ", 1)[1] for line in created.stdout.splitlines() if line.startswith("api key: "))
    assert (await stack.call("GET", "/notif/n0_abc", key=key))[0] == 404  # accepted: read scope, unknown id
    assert (await stack.call("POST", "/users", USER, key=key))[0] == 403
    key_id = key.split("_")[1]
    listed = await asyncio.to_thread(clarion_keys, stack, "list")
    [row] = [line for line in listed.stdout.splitlines() if line.startswith(key_id)]
    assert "cli-client" in row and row.split()[-1] == "-" and key.split("_", 2)[2] not in listed.stdout
    revoked = await asyncio.to_thread(clarion_keys, stack, "revoke", key_id)
    assert revoked.returncode == 0 and "revoked" in revoked.stdout
    listed = await asyncio.to_thread(clarion_keys, stack, "list")
    assert next(line for line in listed.stdout.splitlines() if line.startswith(key_id)).split()[-1] != "-"
    bad = await asyncio.to_thread(clarion_keys, stack, "create", "cli-client", "--scopes", "admin")
    assert bad.returncode == 2 and "scopes must be" in bad.stderr


async def test_versions_per_template_and_templates_per_client_are_bounded(stack: Stack) -> None:
    """Every API process and worker holds every template version in memory: uploads are bounded."""
    key = await stack.new_key("prolific")
    for version in (1, 2, 3):
        assert (await stack.call("POST", "/template", {**TEMPLATE, "version": version}, key=key))[0] == 201
    status, body = await stack.call("POST", "/template", {**TEMPLATE, "version": 4}, key=key)
    assert status == 422 and body["errors"][0]["field"] == "version" and "3 versions" in body["error"]
    for n in range(1, 5):
        assert (await stack.call("POST", "/template", {**TEMPLATE, "template_id": f"t{n}"}, key=key))[0] == 201
    status, body = await stack.call("POST", "/template", {**TEMPLATE, "template_id": "t5"}, key=key)
    assert status == 422 and body["errors"][0]["field"] == "template_id"
    assert (await stack.call("POST", "/template", {**TEMPLATE, "version": 9}))[0] == 201  # other clients: their own
