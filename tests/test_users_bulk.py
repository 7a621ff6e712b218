"""POST /users/bulk and `clarion users import` on the real stack, and the JSON-lines reader under them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from clarion.web import users_bulk
from clarion.web.ndjson import read_lines
from tests.api_stack import CLIENT, Stack, api_stack_fixture
from tests.conftest import run_clarion

pytestmark = pytest.mark.asyncio(loop_scope="module")

stack = api_stack_fixture()  # max_request_bytes 4096: the limit of one line
NDJSON = {"Content-Type": "application/x-ndjson"}


def user(n: int, prefix: str = "bulk", **extra: Any) -> dict[str, Any]:
    return {"user_id": f"{prefix}-{n}", "email": f"{prefix}-{n}@example.com", "phone": f"+1415555{n % 10000:04d}",
            "tags": ["imported"], "attributes": {"n": n}, **extra}  # fmt: skip


def ndjson(*rows: Any) -> bytes:
    return b"".join((row if isinstance(row, bytes) else orjson.dumps(row)) + b"\n" for row in rows)


async def bulk(stack: Stack, body: Any, key: str | None = "", headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """POST /users/bulk; `body` is bytes or an async iterator of chunks (sent chunked)."""
    headers = {**stack.auth(stack.key if key == "" else key), **NDJSON, **(headers or {})}
    async with stack.http.post(stack.url + "/users/bulk", data=body, headers=headers) as resp:
        return resp.status, await resp.json(content_type=None)


async def wait_delivered(stack: Stack, user_id: str, channel: str) -> dict[str, Any]:
    """POST /notif (critical) to `user_id` on `channel`; its one receipt at the simulator."""
    status, body = await stack.call("POST", "/notif", stack.notif(user_id=user_id, channels=[channel]))
    assert status == 202, body
    nid = body["notification_id"]
    doc = await stack.wait_status(nid, {"sent", "failed", "dead_lettered"})
    assert doc["status"] == "sent", doc
    [receipt] = [d for d in stack.sim.state.deliveries if d["nid"] == nid]
    return receipt


# -- the reader --------------------------------------------------------------------------------------


async def chunked(*chunks: bytes) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


async def lines_of(*chunks: bytes, limit: int = 10) -> list[tuple[int, bytes | None]]:
    return [item async for item in read_lines(chunked(*chunks), limit)]


async def test_lines_are_numbered_across_chunks_and_an_oversized_line_is_skipped_alone() -> None:
    assert await lines_of(b"ab", b"c\nde", b"f\n\n", b"gh") == [(1, b"abc"), (2, b"def"), (3, b""), (4, b"gh")]
    assert await lines_of(b"a\r\n", b"b") == [(1, b"a\r"), (2, b"b")]
    assert await lines_of(b"0123456789\n", b"0123456789X\nok\n") == [(1, b"0123456789"), (2, None), (3, b"ok")]
    many = [b"x" * 7] * 5  # 35 bytes of one line, over the limit after the second chunk: never held whole
    assert await lines_of(*many, b"\nnext\n") == [(1, None), (2, b"next")]
    assert await lines_of(*many) == [(1, None)]
    assert await lines_of(b"") == [] and await lines_of(b"\n") == [(1, b"")]


# -- POST /users/bulk --------------------------------------------------------------------------------


async def test_valid_lines_are_accepted_and_reach_a_critical_notification(stack: Stack) -> None:
    rows = [user(n) for n in range(3000)]
    status, body = await bulk(stack, ndjson(*rows[:1500], b"", b"   ", *rows[1500:]))  # blank lines are skipped
    assert (status, body) == (200, {"accepted": 3000, "rejected": 0, "errors": []})
    assert (await wait_delivered(stack, "bulk-2999", "email"))["address"] == "bulk-2999@example.com"
    assert (await wait_delivered(stack, "bulk-17", "sms"))["address"] == "+14155550017"


async def test_each_bad_line_is_named_and_the_good_ones_are_written(stack: Stack) -> None:
    lines = ndjson(
        user(1, "mixed"),
        b"{not json",
        {"user_id": "mixed-3", "email": "nope", "quiet_hours": {"start": "25:00", "end": "08:00"}},
        {**user(4, "mixed"), "client_id": "someone-else"},
        {**user(5, "mixed"), "client_id": CLIENT},  # its own client is fine
        {**user(6, "mixed"), "attributes": {"pad": "x" * 5000}},  # over the 4096-byte line limit
        [user(7, "mixed")],
        {**user(8, "mixed"), "channel_opt_out": ["fax"], "tags": ["ok", ""]},
        user(9, "mixed", promo_opt_out=True, channel_opt_out=["sms"], quiet_hours={"start": "22:00", "end": "07:00"}),
    )
    status, body = await bulk(stack, lines + b'{"user_id": "mixed-10", "email": "mixed-10@example.com"}')  # no \n
    assert status == 200 and (body["accepted"], body["rejected"]) == (4, 6), body
    assert [(e["line"], e["field"]) for e in body["errors"]] == [
        (2, "body"),
        (3, "email"),
        (3, "quiet_hours.start"),
        (4, "client_id"),
        (6, "body"),
        (7, "body"),
        (8, "tags"),
        (8, "channel_opt_out"),
    ]
    errors = {(e["line"], e["field"]): e["error"] for e in body["errors"]}
    assert errors[(2, "body")].startswith("not valid JSON")
    assert "4096 byte limit" in errors[(6, "body")] and "API key's client" in errors[(4, "client_id")]
    assert (await wait_delivered(stack, "mixed-10", "email"))["address"] == "mixed-10@example.com"
    assert (await wait_delivered(stack, "mixed-5", "email"))["address"] == "mixed-5@example.com"


async def test_another_clients_line_never_reaches_their_user(stack: Stack) -> None:
    mallory = await stack.new_key("mallory-bulk")
    status, body = await bulk(stack, ndjson({"user_id": "alice", "client_id": CLIENT, "phone": "+14155559999"}),
                              key=mallory)  # fmt: skip
    assert status == 200 and body["rejected"] == 1 and body["errors"][0]["field"] == "client_id"
    assert (await wait_delivered(stack, "alice", "sms"))["address"] == "+14155550100"


async def test_errors_listed_are_capped_but_every_rejected_line_is_counted(stack: Stack) -> None:
    status, body = await bulk(stack, ndjson(*[{"user_id": f"bad-{n}", "email": "x"} for n in range(250)]))
    assert status == 200 and (body["accepted"], body["rejected"]) == (0, 250)
    assert len(body["errors"]) == users_bulk.MAX_ERRORS and body["errors"][-1]["line"] == users_bulk.MAX_ERRORS


async def test_no_key_is_401_and_a_key_without_the_users_scope_is_403(stack: Stack) -> None:
    status, body = await bulk(stack, ndjson(user(1, "auth")), key=None)
    assert status == 401 and body["errors"][0]["field"] == "Authorization"
    status, body = await bulk(stack, ndjson(user(1, "auth")), key="clk_0123456789abcdef_" + "x" * 43)
    assert status == 401
    sender = await stack.new_key(CLIENT, ["send", "read", "templates"])
    status, body = await bulk(stack, ndjson(user(1, "auth")), key=sender)
    assert status == 403 and "scope" in body["error"] and body["errors"][0]["field"] == "Authorization"
    users_only = await stack.new_key(CLIENT, ["users"])
    assert await bulk(stack, ndjson(user(1, "auth")), key=users_only) == (
        200,
        {"accepted": 1, "rejected": 0, "errors": []},
    )


@pytest.mark.parametrize(
    ("headers", "field"),
    [
        ({"Content-Type": "application/json"}, "Content-Type"),
        ({"Content-Type": "text/plain"}, "Content-Type"),
        ({"Content-Encoding": "gzip"}, "body"),
    ],
)
async def test_a_body_that_is_not_plain_json_lines_is_415(stack: Stack, headers: dict[str, str], field: str) -> None:
    status, body = await bulk(stack, ndjson(user(1, "ct")), headers=headers)
    assert status == 415 and body["errors"][0]["field"] == field


async def test_past_the_line_limit_the_rest_is_not_read_413(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(users_bulk, "MAX_LINES", 10)
    rows = [*[user(n, "limit") for n in range(9)], b"junk", *[user(n, "over") for n in range(5)]]
    status, body = await bulk(stack, ndjson(*rows))
    assert status == 413 and body["errors"][0]["field"] == "body" and "at most 10 lines" in body["error"]
    assert (body["accepted"], body["rejected"]) == (9, 1) and body["errors"][1]["line"] == 10
    assert (await wait_delivered(stack, "limit-8", "email"))["address"] == "limit-8@example.com"


async def test_past_the_byte_limit_is_413_declared_or_streamed(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(users_bulk, "MAX_BODY_BYTES", 2000)
    rows = ndjson(*[user(n, "bytes") for n in range(30)])
    status, body = await bulk(stack, rows)  # Content-Length says it: refused before anything is read
    assert status == 413 and body["errors"][0]["field"] == "body" and "accepted" not in body

    async def stream() -> AsyncIterator[bytes]:
        for start in range(0, len(rows), 500):
            yield rows[start : start + 500]

    status, body = await bulk(stack, stream())  # chunked: the lines complete within the limit are read
    complete = rows[:2000].count(b"\n")
    assert status == 413 and "2000 byte limit" in body["error"]
    assert (body["accepted"], body["rejected"]) == (complete, 0) and 0 < complete < 30
    last = f"bytes-{complete - 1}"
    assert (await wait_delivered(stack, last, "email"))["address"] == f"{last}@example.com"


async def test_an_empty_body_accepts_nothing(stack: Stack) -> None:
    assert await bulk(stack, b"") == (200, {"accepted": 0, "rejected": 0, "errors": []})


# -- clarion users import ----------------------------------------------------------------------------


def import_file(stack: Stack, path: Path, *args: str) -> Any:
    return run_clarion(stack.settings, "users", "import", str(path), *args)


async def test_the_import_command_posts_in_chunks_shows_progress_and_reports_errors(
    stack: Stack, tmp_path: Path
) -> None:
    rows: list[Any] = [user(n, "cli") for n in range(1200)]
    rows[10] = b"{broken"
    rows[1100] = {"user_id": "cli-1100", "timezone": "Mars/Olympus"}
    path = tmp_path / "users.jsonl"
    path.write_bytes(ndjson(*rows))
    done = await asyncio.to_thread(import_file, stack, path, "--key", stack.key, "--chunk-lines", "500")
    assert done.returncode == 1, done.stderr
    out = done.stdout.splitlines()
    assert out[0] == f"1198 accepted, 2 rejected, of 1200 lines in {path}"
    assert out[1].startswith("line 11: body: not valid JSON")
    assert out[2] == "line 1101: timezone: must be an IANA zone such as Europe/Paris"  # the file's line numbers
    assert "1200/1200 lines" in done.stderr and "lines/s" in done.stderr and "[" + "#" * 30 + "]" in done.stderr
    assert (await wait_delivered(stack, "cli-1199", "sms"))["address"] == "+14155551199"


async def test_the_import_command_exits_0_when_every_line_is_accepted(
    stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "good.jsonl"
    path.write_bytes(ndjson(*[user(n, "good") for n in range(20)]))
    monkeypatch.setenv("CLARION_API_KEY", stack.key)  # the key from the environment
    done = await asyncio.to_thread(import_file, stack, path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"20 accepted, 0 rejected, of 20 lines in {path}"]


async def test_the_import_command_fails_clearly(stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CLARION_API_KEY", raising=False)
    path = tmp_path / "one.jsonl"
    path.write_bytes(ndjson(user(1, "fail")))
    no_key = await asyncio.to_thread(import_file, stack, path)
    assert no_key.returncode == 2 and "--key" in no_key.stderr
    missing = await asyncio.to_thread(import_file, stack, tmp_path / "nope.jsonl", "--key", stack.key)
    assert missing.returncode == 2 and "cannot read" in missing.stderr
    reader = await stack.new_key(CLIENT, ["read"])
    refused = await asyncio.to_thread(import_file, stack, path, "--key", reader)
    assert refused.returncode == 3 and "answered 403" in refused.stderr
    unreachable = await asyncio.to_thread(import_file, stack, path, "--key", stack.key, "--api", "http://127.0.0.1:9")
    assert unreachable.returncode == 3 and "ClientConnectorError" in unreachable.stderr


async def test_a_utf8_bom_before_the_first_line_is_ignored(stack: Stack) -> None:
    status, body = await bulk(stack, b"\xef\xbb\xbf" + ndjson(user(1, "bom"), user(2, "bom")))
    assert (status, body) == (200, {"accepted": 2, "rejected": 0, "errors": []})


async def test_bad_chunking_is_400_and_the_api_goes_on(stack: Stack) -> None:
    """aiohttp's parser answers it (text/plain) while the handler reads: a 400 either way, never a 5xx."""
    reader, writer = await asyncio.open_connection("127.0.0.1", stack.settings.api_port)
    line = ndjson(user(1, "chunk"))
    head = (f"POST /users/bulk HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {stack.key}\r\n"
            "Content-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n").encode()  # fmt: skip
    writer.write(head + b"%x\r\n" % len(line) + line + b"\r\nZZ\r\nnot a chunk\r\n")
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), timeout=10)
    writer.close()
    assert answer.split(b" ", 2)[1] == b"400", answer
    assert await bulk(stack, ndjson(user(2, "chunk"))) == (200, {"accepted": 1, "rejected": 0, "errors": []})
