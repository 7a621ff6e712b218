"""Fuzzing every endpoint of a real API process (and, through GET /notif/{id}, a real worker).

Hypothesis generates requests: JSON bodies (nested, odd strings, wrong types, unicode), valid
bodies with one field replaced, raw JSON text (10**400, nesting hundreds of levels deep), raw
bytes, odd path segments and wrong methods. Whatever comes in, the API must never answer 5xx,
and every 4xx must be JSON with an "error". Requests go out over a plain http.client connection
so paths and bytes reach the server exactly as generated. The seed is fixed (derandomize) and
the number of examples bounded to keep this file well under a minute; the count of requests sent
is printed (`pytest -s`) and written to fuzz-requests.txt in the test's tmp dir.
"""

from __future__ import annotations

import asyncio
import http.client
import os
import string
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clarion.keys import create_key
from clarion.tables.api_keys import SCOPES
from clarion.topology.embedded import stop_process, wait_for_port
from clarion.topology.worker import WorkerProcess, settings_env
from tests.conftest import test_settings

FUZZ = settings(
    max_examples=600,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)
METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "TRACE"]
ENDPOINTS = ["/notif", "/notif/batch", "/users", "/users/bulk", "/template", "/healthz", "/notif/n0_" + "ab" * 16,
             "/webhooks/twilio", "/webhooks/ses"]  # fmt: skip
TEMPLATE = {"template_id": "fz", "version": 1, "email_subject": "Hi {{ name }}", "email_text": "{{ name }}"}
TEMPLATE |= {"sms_body": "Code {{ code }} {{ name | upper }}", "push_title": "T", "push_body": "{{ code }}"}
NOTIF = {
    "client_id": "fuzz",
    "idempotency_key": "same-key",  # duplicates are the cheapest path through the worker
    "user_id": "fuzz-nobody",  # never created: an accepted notification fails unknown_user, nothing is delivered
    "channels": ["email", "sms"],
    "template_id": "fz",
    "params": {"name": "Ann", "code": "1234"},
}
USER = {"user_id": "fuzz-user", "email": "a@example.com", "phone": "+14155550100", "timezone": "Europe/Paris"}


ROUTES = {"/notif": "POST", "/notif/batch": "POST", "/users": "POST", "/users/bulk": "POST", "/template": "POST",
          "/healthz": "GET", "/webhooks/twilio": "POST", "/webhooks/ses": "POST"}  # fmt: skip


def route_of(method: str, path: str) -> str:
    """What a request is counted as: its route, a wrong method on a route, or an unknown path."""
    path = path.split("?")[0]
    route = path if path in ROUTES else "/notif/{id}" if path.count("/") == 2 and path.startswith("/notif/") else None
    if route is None:
        return "unknown path"
    return route if method == ROUTES.get(route, "GET") else "wrong method"


class Client:
    """One keep-alive connection to the API; counts what it sends and checks every answer."""

    def __init__(self, port: int, key: str) -> None:
        self.port = port
        self.auth = {"Authorization": f"Bearer {key}"}
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.sent: Counter[str] = Counter()
        self.statuses: Counter[int] = Counter()

    def send(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> int:
        self.sent[route_of(method, path)] += 1
        status, content_type, data = self._exchange(method, path, body, {**self.auth, **(headers or {})})
        self.statuses[status] += 1
        assert status < 500, f"{method} {path} {body!r:.300} -> {status} {data!r:.300}"
        if status >= 400 and method != "HEAD":
            assert content_type == "application/json", f"{method} {path} -> {status} {content_type} {data!r:.200}"
            assert "error" in orjson.loads(data), f"{method} {path} -> {status} {data!r:.200}"
        return status

    def _exchange(self, method: str, path: str, body: Any, headers: dict[str, str]) -> tuple[int, str, bytes]:
        chunked = headers.get("Transfer-Encoding") == "chunked"  # then http.client frames the body itself
        for attempt in range(2):
            try:
                self.conn.request(method, path, body=body, headers=headers, encode_chunked=chunked)
                resp = self.conn.getresponse()
                data = resp.read()
            except (http.client.RemoteDisconnected, ConnectionError):
                # the server may close a connection after an answer such as 413 (body left unread); once more
                self.conn.close()
                if attempt:
                    raise
                continue
            except BaseException:
                self.conn.close()
                raise
            if resp.will_close:
                self.conn.close()
            return resp.status, resp.headers.get_content_type(), data
        raise AssertionError("unreachable")


@pytest.fixture(scope="module")
def api(broker: Any, redis_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    tmp = Path(tmp_path_factory.mktemp("fuzz"))
    cfg = test_settings(broker, redis_server.url, "http://127.0.0.1:9", tmp)  # no provider: nothing is delivered
    worker = WorkerProcess(cfg, tmp / "worker.log").start()
    env = {**os.environ, **settings_env(replace(cfg, status_url=worker.url))}
    log = (tmp / "api.log").open("ab")
    proc = subprocess.Popen([sys.executable, "-m", "clarion.cli", "api"], env=env, stdout=log, stderr=log)
    try:
        wait_for_port(cfg.api_port, timeout_s=60)
        asyncio.run(worker.wait_ready())
        key, _ = asyncio.run(create_key(cfg, "fuzz", list(SCOPES)))
        client = Client(cfg.api_port, key)
        assert client.send("POST", "/template", orjson.dumps(TEMPLATE)) == 201
        assert client.send("POST", "/users", orjson.dumps(USER)) == 202
        yield client
    finally:
        stop_process(proc)
        worker.stop()
        log.close()
    total = sum(client.sent.values())
    answers = dict(sorted(client.statuses.items()))
    report = f"fuzz: {total} requests sent: {dict(sorted(client.sent.items()))}; answers {answers}"
    print(f"\n{report}")
    (tmp / "fuzz-requests.txt").write_text(report + "\n")
    assert "unexpected error" not in (tmp / "api.log").read_text()


# -- generated values ---------------------------------------------------------------------------

ODD_STRINGS = st.sampled_from(
    [
        "",
        " ",
        "\x00",
        "\r\nBcc: x@example.com",
        "é" * 300,
        "🙂" * 50,
        "\u202e" + "gnp.exe",
        "../../etc/passwd",
        "..",
        "a" * 129,
        "x" * 20000,
        "Europe",
        "Europe/",
        "UTC",
        "Europe/Paris",
        "a" * 300,
        "email",
        "sms",
        "self",
        "{{ 1/0 }}",
        "2999-01-01T00:00:00Z",
        "0001-01-01T00:00:00-23:59",
        "9999-12-31T23:59:59+23:59",
    ]
)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
    | ODD_STRINGS
)
KEYS = st.text(max_size=12) | st.sampled_from(["self", "code", "name", "a-b", "1x", "_", "x" * 70, "é"])
JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(KEYS, inner, max_size=6),
    max_leaves=25,
)
# JSON text orjson.dumps cannot write: huge numbers, and nesting up to past orjson's parser limit (1024)
RAW_TOKENS = st.one_of(
    st.sampled_from(["1" + "0" * 400, "-1" + "0" * 400, "1e400", "-1e-400", "18446744073709551616", "-0.0", "1E+2"]),
    st.integers(1, 1100).map(lambda n: "[" * n + "]" * n),
    st.integers(1, 600).map(lambda n: '{"a":' * n + "1" + "}" * n),
    st.integers(1, 300).map(lambda n: '{"code":' * n + '"x"' + "}" * n),
)
PLACEHOLDER = "\x00fuzz-raw\x00"
TEMPLATE_SNIPPETS = st.sampled_from(
    [
        "{{ name }}",
        "{{ code }}",
        "{{ 1/0 }}",
        "{{ 10**5000 }}",
        "{{ " + "(" * 300 + "1" + ")" * 300 + " }}",
        "{{ " + "[" * 300 + "]" * 300 + " }}",
        "{% if x %}" * 200 + "{% endif %}" * 200,
        "{% if name %}",
        "{{ name.__class__ }}",
        "{{ self }}",
        "{{ name|upper }}",
        "{{ range(3)|list }}",
        "{{ 'a' ~ code }}",
        "{{",
        "}}",
        "{#",
        "{% raw %}",
        "<b>{{ name }}</b>",
    ]
)
TEMPLATE_TEXT = st.lists(TEMPLATE_SNIPPETS | st.text(max_size=20), max_size=5).map("".join)


def with_raw(base: dict[str, Any], field: str, raw: str) -> bytes:
    """`base` as JSON with `field` set to JSON text written as is."""
    return orjson.dumps({**base, field: PLACEHOLDER}).replace(orjson.dumps(PLACEHOLDER), raw.encode())


JUNK_BYTES = st.binary(max_size=300) | st.sampled_from([b"", b"\xff\xfe", b'{"a": "\xed\xa0\x80"}', b"{" * 5000])


@st.composite
def mutated(draw: st.DrawFn, base: dict[str, Any], fields: dict[str, st.SearchStrategy]) -> bytes:
    """A valid body with one field replaced (by a value for that field, any JSON, raw JSON text or nothing),
    or junk altogether."""
    field = draw(st.sampled_from(sorted({*base, *fields})))
    kind = draw(st.sampled_from(["field", "field", "field", "json", "raw", "drop", "junk", "bytes"]))
    if kind == "field":
        return orjson.dumps({**base, field: draw(fields.get(field, JSON))})
    if kind == "json":
        return orjson.dumps({**base, field: draw(JSON)})
    if kind == "raw":
        return with_raw(base, field, draw(RAW_TOKENS))
    if kind == "drop":
        return orjson.dumps({k: v for k, v in base.items() if k != field})
    if kind == "junk":
        return with_raw({}, "x", draw(RAW_TOKENS)) if draw(st.booleans()) else orjson.dumps(draw(JSON))
    return draw(JUNK_BYTES)


IDS = ODD_STRINGS | st.text(max_size=30) | st.sampled_from(["fuzz", "fuzz-user", "a:b@c.d-1"])
BIG_INTS = st.integers(min_value=-(2**63), max_value=2**64 - 1)
PARAM_NAMES = st.sampled_from(["name", "code", "self", "_", "x1", "items"]) | KEYS
NOTIF_FIELDS = {
    "client_id": IDS,
    "idempotency_key": IDS,
    "user_id": IDS,
    "channels": st.lists(st.sampled_from(["email", "sms", "apns", "fcm", "fax", ""]) | JSON, max_size=6),
    "channel": st.sampled_from(["email", "sms", "fax"]) | st.text(max_size=10),
    "template_id": st.sampled_from(["fz", "fz2", "nope"]) | IDS,  # fz2: the templates test_post_template made
    "template_version": st.integers(1, 50) | BIG_INTS,
    "params": st.dictionaries(PARAM_NAMES, JSON, max_size=8).map(lambda p: {"name": "Ann", "code": "1", **p}),
    "expires_at": ODD_STRINGS | BIG_INTS | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=30),
}
HHMM = st.sampled_from(["22:00", "08:00", "24:00", "9:00"]) | st.from_regex(r"[0-9]{2}:[0-9]{2}", fullmatch=True)
USER_FIELDS = {
    "user_id": IDS,
    "email": ODD_STRINGS | st.emails() | st.text(max_size=80),
    "phone": st.from_regex(r"\+[0-9]{1,20}", fullmatch=True) | ODD_STRINGS,
    "apns_tokens": st.lists(st.text(alphabet="0123456789abcdefXYZ", max_size=220) | JSON, max_size=4),
    "fcm_tokens": st.lists(st.text(max_size=60) | JSON, max_size=4),
    "locale": st.sampled_from(["en", "pt-BR", "x", "EN", "zh-Hant-TW"]) | st.text(max_size=20),
    "timezone": st.sampled_from(["Europe", "Europe/", "a" * 300, "../../etc/passwd", "UTC", "right/UTC", "Factory"])
    | st.text(max_size=40),
    "attributes": st.dictionaries(KEYS, JSON, max_size=8),
    "tags": st.lists(st.sampled_from(["vip", "", "x" * 65, "a b", "plan:pro"]) | ODD_STRINGS | JSON, max_size=5),
    "promo_opt_out": st.booleans() | JSON,
    "channel_opt_out": st.lists(st.sampled_from(["sms", "email", "fax", ""]) | JSON, max_size=4),
    "quiet_hours": st.fixed_dictionaries({"start": HHMM, "end": HHMM}) | st.dictionaries(KEYS, HHMM | JSON) | JSON,
}
TEMPLATE_FIELDS = {part: TEMPLATE_TEXT for part in ("email_subject", "email_text", "email_html", "sms_body")}
TEMPLATE_FIELDS |= {"push_title": TEMPLATE_TEXT, "push_body": TEMPLATE_TEXT, "template_id": IDS, "version": BIG_INTS}
HEADERS = st.just({}) | st.sampled_from(
    [
        {"Content-Type": "text/plain"},
        {"Content-Type": "application/json; charset=latin-1"},
        {"traceparent": "00-" + "f" * 32 + "-" + "0" * 16 + "-01"},
        {"traceparent": "junk" * 50},
        {"Content-Encoding": "gzip"},
        {"Content-Encoding": "deflate"},
        {"Content-Encoding": "br"},
        {"Transfer-Encoding": "chunked"},
        {"Expect": "100-continue"},
        {"Authorization": ""},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer clk_0123456789abcdef_" + "A" * 43},
        {"Authorization": "Bearer " + "clk_" * 1000},
        {"Authorization": "Basic Zm9vOmJhcg=="},
    ]
)
SEGMENT_CHARS = string.ascii_letters + string.digits + "-._~:@!$&'()*+,;=%"
SEGMENTS = st.one_of(
    st.text(max_size=60).map(lambda s: quote(s, safe="")),
    st.text(alphabet=SEGMENT_CHARS, max_size=60),  # may hold broken escapes such as %zz or %ff
    st.sampled_from(
        [
            "..",
            ".",
            "%2E%2E",
            "..%2F..%2Ftemplates%2Ffz",
            "..%2F..%2Fstatus%2Fx%2F",
            "n0_" + "ab" * 16,
            "n99999999999999999999_x",
            "ext:a@b.c-1",
            "%00",
            "%ff%fe",
            "%C0%AE%C0%AE",
            "a" * 129,
            "a" * 1500,  # 4 of these stay under aiohttp's 8190-byte request line (longer: its own text/plain 400)
            "%",
        ]
    ),
)


# -- one test per endpoint (templates first: the notification tests then render what they made) -------------


def post(client: Client, path: str, body: bytes, headers: dict[str, str]) -> None:
    if headers.get("Transfer-Encoding") == "chunked":
        client.send("POST", path, iter([body[:7], body[7:]]), headers)
    else:
        client.send("POST", path, body, headers)


@FUZZ
@given(body=mutated({**TEMPLATE, "template_id": "fz2"}, TEMPLATE_FIELDS), version=st.integers(2, 50))
def test_post_template(api: Client, body: bytes, version: int) -> None:
    # mostly a fresh version, so most uploads reach the compiler rather than the 409 of an existing one
    api.send("POST", "/template", body.replace(b'"version":1,', b'"version":%d,' % version, 1))


@FUZZ
@given(body=mutated(NOTIF, NOTIF_FIELDS), fuzzed_template=st.booleans(), headers=HEADERS)
def test_post_notif(api: Client, body: bytes, fuzzed_template: bool, headers: dict[str, str]) -> None:
    if fuzzed_template:  # render the latest of the templates test_post_template made
        body = body.replace(b'"template_id":"fz"', b'"template_id":"fz2"', 1)
    post(api, "/notif", body, headers)


@FUZZ
@given(
    items=st.lists(mutated(NOTIF, NOTIF_FIELDS), max_size=5),
    shape=st.sampled_from(["list", "list", "object", "raw"]),
    raw=RAW_TOKENS,
)
def test_post_notif_batch(api: Client, items: list[bytes], shape: str, raw: str) -> None:
    if shape == "list":
        body = b'{"notifications":[' + b",".join(items) + b"]}"
    elif shape == "object":
        body = b'{"notifications":' + (items[0] if items else b"{}") + b"}"
    else:
        body = with_raw({}, "notifications", raw)
    api.send("POST", "/notif/batch", body)


@FUZZ
@given(body=mutated(USER, USER_FIELDS), headers=HEADERS)
def test_post_users(api: Client, body: bytes, headers: dict[str, str]) -> None:
    post(api, "/users", body, headers)


@settings(FUZZ, max_examples=300)
@given(
    lines=st.lists(mutated(USER, USER_FIELDS) | JUNK_BYTES, max_size=6),
    separator=st.sampled_from([b"\n", b"\r\n", b"\n\n"]),
    headers=HEADERS,
)
def test_post_users_bulk(api: Client, lines: list[bytes], separator: bytes, headers: dict[str, str]) -> None:
    """JSON lines, each a fuzzed POST /users body or junk; any Content-Type the headers bring wins."""
    post(api, "/users/bulk", separator.join(lines), {"Content-Type": "application/x-ndjson", **headers})


@FUZZ
@given(segment=SEGMENTS, query=st.sampled_from(["", "?local=1", "?x=%ff", "?" + "a" * 500]))
def test_get_notif(api: Client, segment: str, query: str) -> None:
    api.send("GET", f"/notif/{segment}{query}")


@FUZZ
@given(
    method=st.sampled_from(METHODS),
    path=st.one_of(
        st.sampled_from(ENDPOINTS),
        st.lists(SEGMENTS, min_size=1, max_size=4).map(lambda parts: "/" + "/".join(parts)),
        st.sampled_from(["/", "//notif", "/notif/", "/notif//x", "/healthz/", "/templates/fz/", "/status/x/"]),
    ),
    body=st.none() | st.binary(max_size=100) | JSON.map(orjson.dumps),
)
def test_any_method_any_path(api: Client, method: str, path: str, body: bytes | None) -> None:
    api.send(method, path, body)


TWILIO_FIELDS = ["MessageSid", "MessageStatus", "ErrorCode", "To", "From", "AccountSid", "nid", "did"]
SNS_MESSAGE = {"Type": "Notification", "MessageId": "m", "TopicArn": "arn:aws:sns:us-east-1:1:t", "Message": "{}",
               "Timestamp": "2026-01-01T00:00:00Z", "SignatureVersion": "1", "Signature": "AAAA",
               "SigningCertURL": "https://sns.us-east-1.amazonaws.com/x.pem"}  # fmt: skip


@FUZZ
@given(
    form=st.dictionaries(st.sampled_from(TWILIO_FIELDS) | st.text(max_size=10), st.text(max_size=40), max_size=8),
    signature=st.none() | st.text(string.ascii_letters + string.digits + "+/=_- ", max_size=40) | st.just("AAAA" * 7),
    junk=st.none() | JUNK_BYTES,
    query=st.sampled_from(["", "?nid=n0_ab&did=n0_ab.sms.0", "?nid=..%2F&did=%ff", "?" + "a" * 300]),
)
def test_post_webhook_twilio(
    api: Client, form: dict[str, str], signature: str | None, junk: bytes | None, query: str
) -> None:
    """Unsigned or badly signed callbacks, odd forms and bytes: 4xx (never an API key asked, never a 5xx)."""
    body = junk if junk is not None else urlencode(form).encode()
    headers = {"Content-Type": "application/x-www-form-urlencoded", "Authorization": ""}
    if signature is not None:
        headers["X-Twilio-Signature"] = signature
    api.send("POST", "/webhooks/twilio" + query, body, headers)


@FUZZ
@given(body=mutated(SNS_MESSAGE, {"SigningCertURL": IDS | ODD_STRINGS, "Type": IDS}))
def test_post_webhook_ses(api: Client, body: bytes) -> None:
    """SNS-shaped messages with any field broken: never a certificate fetched from elsewhere, never a 5xx."""
    api.send("POST", "/webhooks/ses", body, {"Content-Type": "text/plain; charset=UTF-8", "Authorization": ""})


def test_healthz_still_answers(api: Client) -> None:
    assert api.send("GET", "/healthz") == 200
