"""SES v2: tags in SES's alphabet, SigV4 as botocore signs it, credentials (static, session
token, botocore's chain) refreshed off the event loop, the error taxonomy, and a simulator
as strict as SES, driven by boto3's own sesv2 client."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiohttp
import boto3
import botocore.auth
import orjson
import pytest
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials, RefreshableCredentials
from botocore.exceptions import ClientError
from hypothesis import given, settings
from hypothesis import strategies as st

from clarion.providers.base import Answer, AuthFailure, Delivered, OutboundMessage, PermanentFailure, TransientFailure
from clarion.providers.dispatch import Dispatcher, order_for
from clarion.providers.errors import TABLE
from clarion.providers.registry import build_clients
from clarion.providers.ses import (
    PATH,
    TAG_CHARS,
    AwsCredentials,
    ChainCredentials,
    SesClient,
    StaticCredentials,
    credential_source,
    decode_tag,
    encode_tag,
    sigv4_headers,
)
from clarion.providers.simulator import Fault, Simulator, start_simulator
from clarion.providers.simulator import ses as sim_ses
from clarion.tables.ledger import LocalLedger
from clarion.tables.templates import Rendered
from clarion.topology.embedded import free_port, pointed_at_simulator
from clarion.topology.settings import Settings
from tests.budget import examples

SIM_KEYS = AwsCredentials(sim_ses.ACCESS_KEY, sim_ses.SECRET_KEY)
REGION = "eu-west-1"
ID_ALPHABET = "abcXYZ019._:@-"


def message(address: str = "u1@example.com", nid: str = "n3_ab12", n: int = 0, **content: str) -> OutboundMessage:
    rendered = Rendered(**(content or {"subject": "Hi Ann", "text": "Hello Ann", "html": "<p>Hello Ann</p>"}))
    return OutboundMessage(f"{nid}.email.{n}", nid, address, rendered)


def client(url: str, creds: AwsCredentials | Any = SIM_KEYS) -> SesClient:
    source = StaticCredentials(creds) if isinstance(creds, AwsCredentials) else creds
    return SesClient(url, REGION, source, "notifications@example.com", 5)


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """botocore sees no credentials but what a test writes: no AWS_* variables, its own files, no IMDS."""
    for name in [n for n in os.environ if n.startswith("AWS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return tmp_path


def sesv2(url: str, secret: str = sim_ses.SECRET_KEY, token: str | None = None, key: str = sim_ses.ACCESS_KEY) -> Any:
    return boto3.client(
        "sesv2",
        endpoint_url=url,
        region_name=REGION,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        aws_session_token=token,
        config=Config(retries={"total_max_attempts": 1}),
    )


async def call(fn: Callable[..., Any], **kwargs: Any) -> Any:
    """A boto3 call (blocking) off the loop the simulator runs on; a ClientError comes back, not raised."""
    try:
        return await asyncio.to_thread(fn, **kwargs)
    except ClientError as exc:
        return exc


def simple(subject: str = "Hello", text: str = "Hi there") -> dict[str, Any]:
    return {"Simple": {"Subject": {"Data": subject}, "Body": {"Text": {"Data": text}}}}


# --- tags ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "tag"),
    [
        ("n3_ab12.email.0", "n3__ab12-email-0"),
        ("a-b:c@d", "a_hb_cc_ad"),
        ("plain", "plain"),
        ("", ""),
    ],
)
def test_tag_encoding_reads_well_and_round_trips(value: str, tag: str) -> None:
    assert encode_tag(value) == tag and decode_tag(tag) == value


@settings(max_examples=examples(300), deadline=None)
@given(st.text(alphabet=ID_ALPHABET, max_size=190))
def test_any_id_becomes_a_valid_ses_tag_and_comes_back(value: str) -> None:
    # ids are at most 128 characters; a delivery id adds ".email.N"
    tag = encode_tag(value)
    assert TAG_CHARS.fullmatch(tag) and len(tag) <= 256
    assert decode_tag(tag) == value


@settings(max_examples=examples(100), deadline=None)
@given(st.text(max_size=60))
def test_any_text_becomes_ses_tag_characters_and_comes_back(value: str) -> None:
    tag = encode_tag(value)
    assert TAG_CHARS.fullmatch(tag) and decode_tag(tag) == value


def test_an_id_the_escapes_would_push_past_256_characters_travels_as_base64() -> None:
    did = ":" * 127 + "a.email.12"  # a valid id: every ":" takes two characters
    tag = encode_tag(did)
    assert tag.startswith("_b") and len(tag) <= 256 and decode_tag(tag) == did


def test_a_tag_encode_tag_cannot_have_made_is_refused() -> None:
    for bad in ("a_", "a_z", "_bnot*base64"):
        with pytest.raises(ValueError):
            decode_tag(bad)


# --- SigV4 against botocore's ----------------------------------------------------------------
@pytest.mark.parametrize("token", ["", "IQoJb3JpZ2luX2VjEJr//////////wEaCXVzLWVhc3QtMSJHMEUCIQ+x/y=="])
@pytest.mark.parametrize("url", ["https://email.eu-west-1.amazonaws.com", "http://127.0.0.1:8443"])
def test_the_signer_signs_exactly_as_botocore(monkeypatch: pytest.MonkeyPatch, token: str, url: str) -> None:
    now = datetime(2026, 11, 26, 7, 5, 9, tzinfo=UTC)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda *a, **k: now.replace(tzinfo=None))
    payload = client(url).payload(message(subject="Héllo ☃", text="x\r\n  y", html=None))  # type: ignore[arg-type]
    secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
    ours = sigv4_headers(url + PATH, payload, REGION, "ses", "AKIDEXAMPLE", secret, now, token)
    request = AWSRequest("POST", url + PATH, data=payload, headers={"Content-Type": "application/json"})
    botocore.auth.SigV4Auth(Credentials("AKIDEXAMPLE", secret, token or None), "ses", REGION).add_auth(request)
    theirs = {k.lower(): v for k, v in request.headers.items()}
    # botocore signs host (from the URL) without setting the header; everything it sends, we send identically
    assert {k: v for k, v in ours.items() if k != "host"} == theirs
    assert ("x-amz-security-token" in ours) == bool(token)
    assert ours["host"] == url.split("://")[1]


# --- the client: taxonomy ------------------------------------------------------------------
class ScriptedSes(SesClient):
    """An SesClient whose HTTP answers come from a script; the headers it signed are kept."""

    def __init__(self, credentials: Any, *answers: Answer | TransientFailure) -> None:
        super().__init__("https://email.eu-west-1.amazonaws.com", REGION, credentials, "n@example.com", 1)
        self.answers = list(answers)
        self.sent: list[dict[str, str]] = []

    async def post(self, path: str, body: bytes, headers: Any) -> Answer | TransientFailure:
        self.sent.append(dict(headers))
        return self.answers.pop(0)


def ses_error(status: int, code: str = "", in_body: bool = False, **headers: str) -> Answer:
    """SES's error answer: the code in x-amzn-ErrorType (REST-JSON) or in the body's __type."""
    body: dict[str, Any] = {"message": "m"}
    if code and in_body:
        body["__type"] = f"com.amazonaws.sesv2#{code}"
    elif code:
        headers["x-amzn-ErrorType"] = f"{code}:http://internal.amazon.com/coral/com.amazonaws.services.email/"
    return Answer(status, headers, orjson.dumps(body))


OK = Answer(200, {}, b'{"MessageId": "m-1"}')
EXPECTED = {"permanent": PermanentFailure, "rate_limited": TransientFailure, "auth": AuthFailure}
SES_CODES = sorted((code, v.kind, v.refresh) for (provider, code), v in TABLE.items()
                   if provider == "ses" and not code.startswith("HTTP "))  # fmt: skip


@pytest.mark.parametrize("in_body", [False, True])
@pytest.mark.parametrize(("code", "kind", "refresh"), SES_CODES)
async def test_every_ses_error_code_gets_its_class(code: str, kind: str, refresh: bool, in_body: bool) -> None:
    auth = 403 if refresh else 400  # refused credentials, or a refused account
    status = {"TooManyRequestsException": 429, "NotFoundException": 404}.get(code, auth if kind == "auth" else 400)
    ses = ScriptedSes(StaticCredentials(SIM_KEYS), ses_error(status, code, in_body))
    result = await ses.send(message())
    assert type(result) is EXPECTED[kind] and result.reason == f"{status} {code}"
    assert len(ses.sent) == 1  # static credentials: nothing fresher to retry with


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (ses_error(429, **{"Retry-After": "7"}), TransientFailure("429 m", 7.0)),
        (ses_error(429, "TooManyRequestsException", **{"Retry-After": "Wed, 21 Oct 2099 07:28:00 GMT"}), None),
        (ses_error(500, "InternalFailure"), TransientFailure("500 InternalFailure")),
        (ses_error(503), TransientFailure("503 m")),
        (ses_error(408), TransientFailure("408 m")),
        (ses_error(403, "SomethingNew"), AuthFailure("403 SomethingNew")),
        (ses_error(400, "SomethingNew"), PermanentFailure("400 SomethingNew")),
        (TransientFailure("timeout"), TransientFailure("timeout")),
        (OK, Delivered("m-1")),
    ],
)
async def test_unknown_codes_fall_back_on_the_status(answer: Answer, expected: Any) -> None:
    result = await ScriptedSes(StaticCredentials(SIM_KEYS), answer).send(message())
    if expected is None:  # an HTTP-date Retry-After
        assert isinstance(result, TransientFailure) and result.retry_after and result.retry_after > 86400
    else:
        assert result == expected


class Rotating:
    """A botocore resolver whose answers a test changes; counts its calls and their threads."""

    def __init__(self, *creds: Credentials) -> None:
        self.creds = list(creds)
        self.threads: list[threading.Thread] = []

    def __call__(self) -> Credentials:
        self.threads.append(threading.current_thread())
        return self.creds.pop(0) if len(self.creds) > 1 else self.creds[0]


async def test_refused_chain_credentials_are_refreshed_and_the_send_retried_once() -> None:
    chain = ChainCredentials(Rotating(Credentials("AK1", "S1", "T1"), Credentials("AK2", "S2", "T2")))
    ses = ScriptedSes(chain, ses_error(403, "ExpiredTokenException"), OK)
    assert await ses.send(message()) == Delivered("m-1")
    assert [h["authorization"].split("Credential=")[1].split("/")[0] for h in ses.sent] == ["AK1", "AK2"]
    assert [h["x-amz-security-token"] for h in ses.sent] == ["T1", "T2"]

    refused_twice = ScriptedSes(
        ChainCredentials(Rotating(Credentials("AK1", "S1"), Credentials("AK2", "S2"))),
        ses_error(403, "InvalidClientTokenId"),
        ses_error(403, "UnrecognizedClientException"),
    )
    assert await refused_twice.send(message()) == AuthFailure("403 UnrecognizedClientException")
    assert len(refused_twice.sent) == 2


async def test_no_credentials_at_all_is_an_auth_failure_not_a_crash() -> None:
    assert isinstance(await ScriptedSes(StaticCredentials(AwsCredentials("", ""))).send(message()), AuthFailure)
    result = await ScriptedSes(ChainCredentials(lambda: None)).send(message())
    assert isinstance(result, AuthFailure) and "no credentials" in result.reason


# --- credentials: botocore's chain, refreshed in a thread ----------------------------------------
class Clock:
    """botocore's idea of now, which a test moves."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


def expiring(clock: Clock, in_s: float, refresh: Callable[[], dict[str, str]]) -> RefreshableCredentials:
    expiry = clock.now + timedelta(seconds=in_s)
    return RefreshableCredentials("AK1", "S1", "T1", expiry, refresh, "test", time_fetcher=clock)


def slow_refresh(seconds: float, threads: list[threading.Thread]) -> Callable[[], dict[str, str]]:
    """What STS or the instance metadata service would answer, slowly (a blocking call)."""

    def refresh() -> dict[str, str]:
        threads.append(threading.current_thread())
        time.sleep(seconds)
        expiry = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        return {"access_key": "AK2", "secret_key": "S2", "token": "T2", "expiry_time": expiry}

    return refresh


async def ticks_during(work: Any) -> tuple[Any, int]:
    """`work`'s result, and how many 10 ms ticks the event loop managed meanwhile."""
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    try:
        return await work, ticks
    finally:
        task.cancel()


async def test_credentials_in_the_advisory_window_refresh_in_the_background() -> None:
    threads: list[threading.Thread] = []
    clock = Clock()
    chain = ChainCredentials(lambda: expiring(clock, 20 * 60, slow_refresh(0.3, threads)))
    assert await chain.get() == AwsCredentials("AK1", "S1", "T1")  # the first resolve (in a thread)
    clock.now += timedelta(minutes=8)  # 12 minutes left: botocore's advisory window (15)
    # still valid: answered at once with the old credentials (a get that waited would have the new ones)
    assert await chain.get() == AwsCredentials("AK1", "S1", "T1")
    _, ticks = await ticks_during(asyncio.sleep(0.5))
    assert ticks >= 20  # the loop ran while the refresh slept in its thread
    assert await chain.get() == AwsCredentials("AK2", "S2", "T2")
    assert len(threads) == 1 and threads[0] is not threading.main_thread()


async def test_credentials_about_to_expire_wait_for_the_refresh_without_blocking_the_loop() -> None:
    threads: list[threading.Thread] = []
    clock = Clock()
    chain = ChainCredentials(lambda: expiring(clock, 20 * 60, slow_refresh(0.3, threads)))
    await chain.get()
    clock.now += timedelta(minutes=19, seconds=30)
    fresh, ticks = await ticks_during(asyncio.gather(*(chain.get() for _ in range(20))))
    assert fresh == [AwsCredentials("AK2", "S2", "T2")] * 20
    assert len(threads) == 1  # one refresh shared by every waiting send
    assert ticks >= 15 and threads[0] is not threading.main_thread()


async def test_the_chain_reads_the_environment_and_the_shared_credentials_file(
    aws_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (aws_env / "credentials").write_text("[default]\naws_access_key_id = AKFILE1\naws_secret_access_key = s1\n")
    chain = credential_source("chain", "", "")
    first = await chain.get()
    assert first == AwsCredentials("AKFILE1", "s1")
    (aws_env / "credentials").write_text(
        "[default]\naws_access_key_id = AKFILE2\naws_secret_access_key = s2\naws_session_token = t2\n"
    )
    assert await chain.refresh(first) == AwsCredentials("AKFILE2", "s2", "t2")  # rotated on disk: re-read

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKENV")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "senv")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "tenv")
    assert await credential_source("chain", "", "").get() == AwsCredentials("AKENV", "senv", "tenv")


def test_settings_pick_the_credential_source() -> None:
    static = credential_source("static", "AK", "SK", "TOK")
    assert isinstance(static, StaticCredentials) and static.credentials == AwsCredentials("AK", "SK", "TOK")
    assert isinstance(credential_source("chain", "", ""), ChainCredentials)
    with pytest.raises(ValueError):
        credential_source("env", "", "")
    ses = build_clients(Settings(ses_credentials="chain"))["email"]
    assert isinstance(ses, SesClient) and isinstance(ses.credentials, ChainCredentials)


# --- the client against the strict simulator -----------------------------------------------------
async def test_a_delivery_reaches_the_simulator_with_its_ids_decoded(simulator: tuple[Simulator, str]) -> None:
    sim, url = simulator
    ses = client(url)
    try:
        assert isinstance(await ses.send(message()), Delivered)
    finally:
        await ses.close()
    [receipt] = sim.state.deliveries
    assert (receipt["address"], receipt["nid"], receipt["did"]) == ("u1@example.com", "n3_ab12", "n3_ab12.email.0")
    assert receipt["tags"] == {"clarion_nid": "n3__ab12", "clarion_did": "n3__ab12-email-0"}
    assert (receipt["subject"], receipt["text"], receipt["html"]) == ("Hi Ann", "Hello Ann", "<p>Hello Ann</p>")


async def test_the_defaults_agree_with_pointed_at_simulator(simulator: tuple[Simulator, str]) -> None:
    sim, url = simulator
    s = pointed_at_simulator(Settings(), url)
    ses = build_clients(s)["email"]
    try:
        assert isinstance(await ses.send(message()), Delivered)
    finally:
        await ses.close()
    assert len(sim.state.deliveries) == 1


async def test_a_simulator_started_from_settings_accepts_the_keys_workers_sign_with() -> None:
    base = Settings(ses_access_key="AKIDCOMPOSE", ses_secret_key="compose", ses_credentials="chain")
    port = free_port()
    sim, runner = await start_simulator("127.0.0.1", port, **sim_ses.options(base))
    ses = build_clients(pointed_at_simulator(base, f"http://127.0.0.1:{port}"))["email"]
    try:
        assert isinstance(await ses.send(message()), Delivered)  # static keys, not botocore's chain
    finally:
        await ses.close()
        await runner.cleanup()
    assert len(sim.state.deliveries) == 1


async def test_refused_credentials_hold_the_email_channel(simulator: tuple[Simulator, str]) -> None:
    sim, url = simulator
    ses = client(url, AwsCredentials(sim_ses.ACCESS_KEY, "wrong"))
    dispatcher = Dispatcher({"email": ses}, LocalLedger(60), 4, auth_hold_s=60)
    orders = [
        order_for(
            "critical", "email", f"n{i}.email.0", f"n{i}", "u@example.com", Rendered(subject="s", text="t"), False
        )
        for i in range(2)
    ]
    try:
        assert [(r.kind, r.detail) for r in await dispatcher.run(orders[:1])] == [("held", "403 SignatureDoesNotMatch")]
        assert [r.kind for r in await dispatcher.run(orders[1:])] == ["held"]
    finally:
        await dispatcher.close()
    assert sim.state.deliveries == []


@pytest.fixture
async def token_sim() -> AsyncIterator[tuple[Simulator, str]]:
    port = free_port()
    sim, runner = await start_simulator(
        "127.0.0.1", port, ses_access_key="ASIA1", ses_secret_key="s1", ses_session_token="tok1"
    )
    yield sim, f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def test_session_tokens_are_checked_and_an_expired_one_is_refreshed(token_sim: tuple[Simulator, str]) -> None:
    sim, url = token_sim
    without = client(url, AwsCredentials("ASIA1", "s1"))
    wrong = client(url, AwsCredentials("ASIA1", "s1", "forged"))
    resolver = Rotating(Credentials("ASIA1", "s1", "tok1"), Credentials("ASIA2", "s2", "tok2"))
    chained = client(url, ChainCredentials(resolver))
    try:
        assert await without.send(message(n=0)) == AuthFailure("403 UnrecognizedClientException")
        assert await wrong.send(message(n=1)) == AuthFailure("403 UnrecognizedClientException")
        assert isinstance(await chained.send(message(n=2)), Delivered)
        sim.ses_account.rotate("ASIA2", "s2", "tok2")  # STS issued new credentials; tok1 is now expired
        assert isinstance(await chained.send(message(n=3)), Delivered)  # 403 ExpiredTokenException, refresh, retry
    finally:
        for c in (without, wrong, chained):
            await c.close()
    assert [d["did"] for d in sim.state.deliveries] == ["n3_ab12.email.2", "n3_ab12.email.3"]
    assert len(resolver.threads) == 2 and threading.main_thread() not in resolver.threads


async def test_a_clock_more_than_5_minutes_off_is_refused(simulator: tuple[Simulator, str]) -> None:
    sim, url = simulator
    payload = client(url).payload(message())
    async with aiohttp.ClientSession() as http:
        for skew, words in ((-6, "Signature expired"), (6, "Signature not yet current"), (-4, None)):
            when = datetime.now(UTC) + timedelta(minutes=skew)
            headers = sigv4_headers(url + PATH, payload, REGION, "ses", SIM_KEYS.access_key, SIM_KEYS.secret_key, when)
            async with http.post(url + PATH, data=payload, headers=headers) as resp:
                body = await resp.json()
                if words is None:
                    assert resp.status == 200
                else:
                    assert resp.status == 403 and words in body["message"]
                    assert resp.headers["x-amzn-ErrorType"].startswith("InvalidSignatureException:")
    assert len(sim.state.deliveries) == 1  # the request signed 4 minutes ago


# --- the simulator through boto3's sesv2 client ---------------------------------------------------
async def test_boto3_sends_to_several_recipients_with_tags_and_a_session_token(
    aws_env: Path, token_sim: tuple[Simulator, str]
) -> None:
    sim, url = token_sim
    ses = sesv2(url, "s1", "tok1", key="ASIA1")
    answer = await call(
        ses.send_email,
        FromEmailAddress="Clarion <notifications@example.com>",
        Destination={
            "ToAddresses": ["a@example.com", "b@example.com"],
            "CcAddresses": ["c@example.com"],
            "BccAddresses": ["d@example.com"],
        },
        Content=simple("Welcome", "Hello"),
        EmailTags=[{"Name": "clarion_did", "Value": encode_tag("n1.email.0")}, {"Name": "campaign", "Value": "w-1"}],
        ConfigurationSetName="clarion-events",
    )
    assert answer["ResponseMetadata"]["HTTPStatusCode"] == 200 and answer["MessageId"]
    [receipt] = sim.state.deliveries
    assert receipt["recipients"] == ["a@example.com", "b@example.com", "c@example.com", "d@example.com"]
    assert receipt["address"] == "a@example.com" and receipt["bcc"] == ["d@example.com"]
    assert (receipt["subject"], receipt["text"], receipt["did"]) == ("Welcome", "Hello", "n1.email.0")
    assert receipt["tags"] == {"clarion_did": "n1-email-0", "campaign": "w-1"}
    assert receipt["configuration_set"] == "clarion-events"


async def test_boto3_sees_ses_refusals_of_bad_credentials(aws_env: Path, token_sim: tuple[Simulator, str]) -> None:
    sim, url = token_sim
    refusals = [
        (
            await call(
                sesv2(url, "not-the-secret", "tok1", key="ASIA1").send_email,
                Destination={"ToAddresses": ["a@example.com"]},
                FromEmailAddress="n@example.com",
                Content=simple(),
            ),
            "SignatureDoesNotMatch",
            403,
        ),
        (
            await call(
                sesv2(url, "s1", "tok1", key="ASIAOTHER").send_email,
                Destination={"ToAddresses": ["a@example.com"]},
                FromEmailAddress="n@example.com",
                Content=simple(),
            ),
            "UnrecognizedClientException",
            403,
        ),
    ]
    async with aiohttp.ClientSession() as http:  # the control endpoint: STS issued new credentials
        rotated = {"access_key": "ASIA2", "secret_key": "s2", "session_token": "tok2"}
        async with http.post(url + "/_sim/ses/credentials", json=rotated) as resp:
            assert resp.status == 200
    expired = await call(
        sesv2(url, "s1", "tok1", key="ASIA1").send_email,
        Destination={"ToAddresses": ["a@example.com"]},
        FromEmailAddress="n@example.com",
        Content=simple(),
    )
    refusals.append((expired, "ExpiredTokenException", 403))
    for error, code, status in refusals:
        assert isinstance(error, ClientError), error
        assert (
            error.response["Error"]["Code"] == code and error.response["ResponseMetadata"]["HTTPStatusCode"] == status
        )
    assert "The Canonical String for this request should have been" in refusals[0][0].response["Error"]["Message"]
    assert sim.state.deliveries == []


async def test_boto3_sees_the_body_checked_like_ses_does(
    aws_env: Path, simulator: tuple[Simulator, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sim, url = simulator
    ses = sesv2(url)

    async def send(to: list[str], **kwargs: Any) -> Any:
        kwargs.setdefault("Content", simple())
        return await call(ses.send_email, FromEmailAddress="n@example.com", Destination={"ToAddresses": to}, **kwargs)

    def code(answer: Any) -> str:
        return answer.response["Error"]["Code"] if isinstance(answer, ClientError) else "OK"

    bad_tag = await send(["a@example.com"], EmailTags=[{"Name": "clarion_did", "Value": "n1.email.0"}])
    assert code(bad_tag) == "BadRequestException" and "<n1.email.0>" in bad_tag.response["Error"]["Message"]
    assert (
        code(await send(["a@example.com"], EmailTags=[{"Name": "clarion:did", "Value": "x"}])) == "BadRequestException"
    )
    assert code(await send(["a@example.com"], EmailTags=[{"Name": "ses:feedback-id-a", "Value": "x"}])) == "OK"
    assert code(await send([f"u{i}@example.com" for i in range(51)])) == "BadRequestException"
    assert code(await send([f"u{i}@example.com" for i in range(50)])) == "OK"
    assert code(await send(["not-an-address"])) == "BadRequestException"
    assert code(await send([])) == "MessageRejected"
    assert code(await send(["a@example.com"], Content=simple(text="x" * 2_000_000))) == "OK"  # past aiohttp's 1 MB
    monkeypatch.setattr(sim_ses, "MAX_MESSAGE_BYTES", 1000)
    assert code(await send(["a@example.com"], Content=simple(text="x" * 1001))) == "MessageRejected"
    template = {"Template": {"TemplateName": "welcome", "TemplateData": "{}"}}
    assert code(await send(["a@example.com"], Content=template)) == "NotImplemented"
    assert len(sim.state.deliveries) == 3


async def test_the_body_needs_its_required_fields(simulator: tuple[Simulator, str]) -> None:
    sim, url = simulator
    async with aiohttp.ClientSession() as http:
        for doc in ({}, {"Content": {}}, {"Content": {"Simple": {"Body": {}}}}, {"Content": {**simple(), "Raw": {}}}):
            payload = orjson.dumps(
                {"FromEmailAddress": "n@example.com", "Destination": {"ToAddresses": ["a@b.co"]}, **doc}
            )
            headers = sigv4_headers(
                url + PATH, payload, REGION, "ses", SIM_KEYS.access_key, SIM_KEYS.secret_key, datetime.now(UTC)
            )
            async with http.post(url + PATH, data=payload, headers=headers) as resp:
                assert resp.status == 400 and resp.headers["x-amzn-ErrorType"].startswith("BadRequestException:"), doc
    assert sim.state.deliveries == []


async def test_boto3_raw_messages_are_accepted(aws_env: Path, simulator: tuple[Simulator, str]) -> None:
    sim, url = simulator
    mime = EmailMessage()
    mime["From"], mime["To"], mime["Subject"] = "n@example.com", "Ann <ann@example.com>, bob@example.com", "Raw hi"
    mime.set_content("plain body")
    mime.add_alternative("<p>html body</p>", subtype="html")
    answer = await call(sesv2(url).send_email, Content={"Raw": {"Data": mime.as_bytes()}})
    assert not isinstance(answer, ClientError), answer
    [receipt] = sim.state.deliveries
    assert receipt["recipients"] == ["ann@example.com", "bob@example.com"] and receipt["from"] == "n@example.com"
    assert (receipt["subject"], receipt["text"].strip(), receipt["html"].strip()) == (
        "Raw hi",
        "plain body",
        "<p>html body</p>",
    )


async def test_mailbox_simulator_addresses(aws_env: Path, simulator: tuple[Simulator, str]) -> None:
    sim, url = simulator
    ses = sesv2(url)
    to = ["success@simulator.amazonses.com", "bounce+u1@simulator.amazonses.com", "complaint@simulator.amazonses.com"]
    answer = await call(
        ses.send_email, FromEmailAddress="n@example.com", Destination={"ToAddresses": to}, Content=simple()
    )
    assert not isinstance(answer, ClientError)  # SES accepts a bounce: its notification comes later
    assert sim.state.deliveries[0]["feedback"] == {to[1]: "bounce", to[2]: "complaint"}
    suppressed = await call(
        ses.send_email,
        FromEmailAddress="n@example.com",
        Content=simple(),
        Destination={"ToAddresses": ["a@example.com", "suppressionlist@simulator.amazonses.com"]},
    )
    assert isinstance(suppressed, ClientError) and suppressed.response["Error"]["Code"] == "MessageRejected"
    assert sim.state.rejected[-1]["kind"] == "suppressed" and len(sim.state.deliveries) == 1

    ours = client(url)
    try:
        assert await ours.send(message("suppressionlist@simulator.amazonses.com")) == PermanentFailure(
            "400 MessageRejected"
        )
    finally:
        await ours.close()


async def test_injected_faults_answer_in_ses_shape(aws_env: Path, simulator: tuple[Simulator, str]) -> None:
    sim, url = simulator
    sim.state.faults.append(Fault("email", "throttle", "a@example.com", times=1, retry_after="7"))
    sim.state.faults.append(Fault("email", "transient", "b@example.com", times=1))
    throttled = await call(
        sesv2(url).send_email,
        FromEmailAddress="n@example.com",
        Content=simple(),
        Destination={"ToAddresses": ["a@example.com"]},
    )
    assert isinstance(throttled, ClientError) and throttled.response["Error"]["Code"] == "TooManyRequestsException"
    ours = client(url)
    try:
        assert await ours.send(message("b@example.com")) == TransientFailure("503 ServiceUnavailable")
        assert isinstance(await ours.send(message("a@example.com")), Delivered)
    finally:
        await ours.close()
