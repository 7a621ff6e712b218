"""POST /audiences/preview end to end: API -> worker page -> every users partition, on the embedded broker."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from typing import Any

import orjson
import pytest
import pytest_asyncio
from aiokafka import AIOKafkaProducer

from clarion.schemas.records import scoped
from clarion.topology.catalog import catalog
from clarion.topology.embedded import free_port
from clarion.topology.worker import WorkerProcess
from tests.api_stack import CLIENT, Stack, api_stack_fixture

pytestmark = pytest.mark.asyncio(loop_scope="module")
MAX_USERS = 100  # preview_max_users: 50 users read per partition (2 partitions)
stack = api_stack_fixture(preview_max_users=MAX_USERS)

RIVAL, BIG = "rival", "big"
WEB_USERS = [
    {"user_id": f"u{i:02d}", "attributes": {"plan": "pro" if i % 3 == 0 else "free", "n": i},
     "tags": ["beta"] if i % 5 == 0 else []}
    for i in range(30)
]  # fmt: skip
# the same ids, all pro and beta: counted for the web client, they would show
RIVAL_USERS = [{"user_id": f"u{i:02d}", "attributes": {"plan": "pro", "n": i}, "tags": ["beta"]} for i in range(40)]
BIG_USERS = [{"user_id": f"b{i:03d}"} for i in range(150)]


async def load_users(stack: Stack, client_id: str, users: list[dict[str, Any]]) -> None:
    """Produce user profiles straight to the users topic."""
    topic = catalog(stack.settings)["users"].topic
    producer = AIOKafkaProducer(bootstrap_servers=stack.settings.bootstrap_servers, linger_ms=5)
    await producer.start()
    try:
        sent = []
        for user in users:
            value = orjson.dumps({"client_id": client_id, **user})
            sent.append(await producer.send(topic, value, key=scoped(client_id, user["user_id"]).encode()))
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


async def preview(stack: Stack, audience: Any, key: str | None = "") -> tuple[int, Any]:
    return await stack.call("POST", "/audiences/preview", {"audience": audience}, key=key)


async def wait_count(stack: Stack, key: str, count: int, timeout_s: float = 60) -> dict[str, Any]:
    """The answer for all of `key`'s client's users once it counts `count` (the users are folded by then)."""
    deadline = time.monotonic() + timeout_s
    got: Any = None
    while time.monotonic() < deadline:
        got = await preview(stack, {"all": True}, key)
        if got[0] == 200 and got[1]["count"] == count:
            return got[1]
        await asyncio.sleep(0.2)
    raise AssertionError(f"the preview never counted {count}: {got}")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def keys(stack: Stack) -> dict[str, str]:
    """Every client's users loaded and folded; a read key per client."""
    keys = {CLIENT: stack.key, RIVAL: await stack.new_key(RIVAL, ["read"]), BIG: await stack.new_key(BIG, ["read"])}
    await load_users(stack, CLIENT, WEB_USERS)
    await load_users(stack, RIVAL, RIVAL_USERS)
    await load_users(stack, BIG, BIG_USERS)
    await wait_count(stack, keys[CLIENT], len(WEB_USERS) + 1)  # and alice, the stack's user
    await wait_count(stack, keys[RIVAL], len(RIVAL_USERS))
    # the last of the big client's users is folded: asked by id, it is there
    deadline = time.monotonic() + 30
    while (await preview(stack, {"user_ids": ["b149"]}, keys[BIG]))[1].get("count") != 1:
        assert time.monotonic() < deadline, "the big client's users were never folded"
        await asyncio.sleep(0.2)
    return keys


async def test_all_of_a_clients_users(stack: Stack, keys: dict[str, str]) -> None:
    status, body = await preview(stack, {"all": True})
    assert status == 200, body
    assert body == {
        "count": 31, "sample": ["alice", *(f"u{i:02d}" for i in range(9))], "scanned": 31, "complete": True,
    }  # fmt: skip
    status, body = await preview(stack, {"all": True}, keys[RIVAL])
    assert (status, body["count"], body["scanned"]) == (200, 40, 40)


async def test_where_counts_only_the_matching_users_of_the_caller(stack: Stack, keys: dict[str, str]) -> None:
    status, body = await preview(stack, {"where": 'attributes.plan == "pro"'})
    assert status == 200, body
    pro = [f"u{i:02d}" for i in range(0, 30, 3)]
    assert (body["count"], body["sample"], body["scanned"], body["complete"]) == (10, pro, 31, True)
    status, body = await preview(stack, {"where": '"beta" in tags and attributes.n >= 10'})
    assert (status, body["count"], body["sample"]) == (200, 4, ["u10", "u15", "u20", "u25"])
    status, body = await preview(stack, {"where": '"beta" in tags'}, keys[RIVAL])
    assert (status, body["count"]) == (200, 40)
    status, body = await preview(stack, {"where": 'attributes.plan == "enterprise"'})
    assert (status, body) == (200, {"count": 0, "sample": [], "scanned": 31, "complete": True})


async def test_user_ids_are_looked_up_not_scanned(stack: Stack, keys: dict[str, str]) -> None:
    ids = ["u01", "u02", "u35", "nobody", "alice", "u01"]  # u35 is the rival's only; u01 twice
    status, body = await preview(stack, {"user_ids": ids})
    assert status == 200, body
    assert body == {"count": 3, "sample": ["alice", "u01", "u02"], "scanned": 5, "complete": True}
    status, body = await preview(stack, {"user_ids": ids}, keys[RIVAL])
    assert (status, body["count"], body["sample"]) == (200, 3, ["u01", "u02", "u35"])
    many = [f"b{i:03d}" for i in range(150)] + [f"x{i}" for i in range(50)]  # lookups are not bounded by the scan
    status, body = await preview(stack, {"user_ids": many}, keys[BIG])
    assert (status, body["count"], body["scanned"], body["complete"]) == (200, 150, 200, True)


async def test_a_scan_over_the_bound_says_it_is_incomplete(stack: Stack, keys: dict[str, str]) -> None:
    status, body = await preview(stack, {"all": True}, keys[BIG])
    assert status == 200, body
    # 150 users on 2 partitions, at most 50 read from each: at least one partition was cut short
    assert body["complete"] is False
    assert 50 < body["scanned"] <= MAX_USERS and body["count"] == body["scanned"]
    assert body["sample"] == [f"b{i:03d}" for i in range(10)]


async def test_keys_are_checked(stack: Stack, keys: dict[str, str]) -> None:
    status, body = await preview(stack, {"all": True}, key=None)
    assert (status, body["errors"][0]["field"]) == (401, "Authorization")
    status, _ = await preview(stack, {"all": True}, key="ck_bogus.secret")
    assert status == 401
    send_only = await stack.new_key(CLIENT, ["send"])
    status, body = await preview(stack, {"all": True}, key=send_only)
    assert (status, body["errors"][0]["field"]) == (403, "Authorization")
    status, body = await stack.call("POST", "/audiences/preview", {"client_id": RIVAL, "audience": {"all": True}})
    assert (status, body["errors"][0]["field"]) == (403, "client_id")
    # the worker's page asks for a key too
    page = f"http://127.0.0.1:{stack.settings.web_port}/audiences/preview/"
    for headers in ({}, {"Authorization": "Bearer ck_bogus.secret"}):
        async with stack.http.post(page, json={"audience": {"all": True}}, headers=headers) as resp:
            assert resp.status == 401
    async with stack.http.post(page + "?local=1", json={"audience": {"all": True}, "partitions": [0, 1]}) as resp:
        assert resp.status == 401


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"audience": {"where": 'attributes.plan == "pro" and'}}, 422, "audience.where"),
        ({"audience": {"where": "attributes.plan = 1"}}, 422, "audience.where"),
        ({"audience": {"where": 42}}, 400, "audience.where"),
        ({"audience": {"all": True, "where": "has attributes.n"}}, 400, "audience"),
        ({"audience": {"all": "yes"}}, 400, "audience"),
        ({"audience": {"user_ids": []}}, 400, "audience.user_ids"),
        ({"audience": {"user_ids": ["a/b"]}}, 400, "audience.user_ids"),
        ({"audience": {"segment": "x"}}, 400, "audience"),
        ({}, 400, "audience"),
        ([], 400, "body"),
    ],
)
async def test_bad_audiences_name_the_field(
    stack: Stack, keys: dict[str, str], body: Any, status: int, field: str
) -> None:
    got, answer = await stack.call("POST", "/audiences/preview", body)
    assert got == status, answer
    assert field in [e["field"] for e in answer["errors"]]


async def test_the_worker_page_validates_too(stack: Stack, keys: dict[str, str]) -> None:
    page = f"http://127.0.0.1:{stack.settings.web_port}/audiences/preview/"
    auth = stack.auth(stack.key)
    cases = [(b"{not json", 400, "body"), (b'{"audience": {"where": "has"}}', 422, "audience.where"),
             (b'{"audience": {"user_ids": 3}}', 400, "audience.user_ids")]  # fmt: skip
    for raw, status, field in cases:
        async with stack.http.post(page, data=raw, headers=auth) as resp:
            assert resp.status == status, raw
            assert field in [e["field"] for e in (await resp.json())["errors"]]
    async with stack.http.post(page + "?local=1", json={"audience": {"all": True}, "partitions": "all"},
                               headers=auth) as resp:  # fmt: skip
        assert (resp.status, (await resp.json())["errors"][0]["field"]) == (400, "partitions")


async def test_with_two_workers_each_counts_the_partitions_it_holds(
    stack: Stack, keys: dict[str, str], tmp_path: Any
) -> None:
    """A second worker joins: the worker the API asks holds one users partition and asks the other for the rest."""
    settings = replace(stack.settings, web_port=free_port(), data_dir=str(tmp_path / "data-b"))
    second = WorkerProcess(settings, tmp_path / "b.log").start()
    first_url = f"http://127.0.0.1:{stack.settings.web_port}"
    try:
        await second.wait_ready()
        deadline = time.monotonic() + 60
        while True:  # until each worker counts one users partition of its own
            shares = [await _local_count(stack, url) for url in (first_url, second.url)]
            if all(share and len(share["partitions"]) == 1 for share in shares):
                break
            assert time.monotonic() < deadline, f"the users partitions were never shared: {shares}"
            await asyncio.sleep(0.2)
        assert sorted(shares[0]["partitions"] + shares[1]["partitions"]) == [0, 1]
        assert shares[0]["count"] + shares[1]["count"] == 31 and shares[0]["count"] and shares[1]["count"]
        status, body = await preview(stack, {"all": True})
        assert (status, body) == (200, {
            "count": 31, "sample": ["alice", *(f"u{i:02d}" for i in range(9))], "scanned": 31, "complete": True,
        })  # fmt: skip
        status, body = await preview(stack, {"user_ids": ["u01", "u02", "u35", "alice"]})
        assert (status, body["count"], body["scanned"]) == (200, 3, 4)
    finally:
        second.stop()
    await wait_count(stack, stack.key, 31)  # the first worker holds them all again


async def _local_count(stack: Stack, url: str) -> dict[str, Any] | None:
    """What one worker counts of the web client's users over the partitions it holds (None: no answer)."""
    body = {"audience": {"all": True}, "partitions": [0, 1]}
    async with stack.http.post(f"{url}/audiences/preview/?local=1", json=body, headers=stack.auth(stack.key)) as resp:
        return await resp.json() if resp.status == 200 else None
