"""FCM HTTP v1: service-account OAuth2 against the strict simulator, refresh, and the error taxonomy."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import google.auth.transport.requests
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.auth.exceptions import RefreshError
from google.oauth2 import service_account

from clarion.providers.base import Answer, AuthFailure, Delivered, OutboundMessage, PermanentFailure, TransientFailure
from clarion.providers.fcm import SCOPE, FcmClient, ServiceAccountTokens, outcome
from clarion.providers.simulator import Simulator
from clarion.providers.simulator.fcm import AUDIENCES, JWT_BEARER, STATIC_BEARER, FcmAuth
from clarion.tables.templates import Rendered
from clarion.topology.settings import Settings

Sim = tuple[Simulator, str]


def account_file(sim: Simulator, url: str, tmp_path: Path, project: str = "proj-a") -> Path:
    path = tmp_path / f"{project}-sa.json"
    path.write_text(json.dumps(sim.fcm.service_account(f"{url}/token", project_id=project)))
    return path


def message(n: int, address: str = "tok-1") -> OutboundMessage:
    return OutboundMessage(f"n_{n}.fcm.0", f"n_{n}", address, Rendered(title="Hi", body=f"message {n}"))


def client_for(url: str, path: Path, refresh_margin_s: float = 300.0) -> FcmClient:
    tokens = ServiceAccountTokens(str(path), 5.0, refresh_margin_s)
    return FcmClient(url, tokens.project_id, "", 5.0, tokens)


async def post(url: str, path: str, body: Any, bearer: str = STATIC_BEARER) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
    async with aiohttp.ClientSession() as session, session.post(url + path, json=body, headers=headers) as resp:
        return resp.status, await resp.json()


def mint_with_google_auth(path: Path) -> service_account.Credentials:
    """google-auth's own service-account flow (blocking: run it off the loop the simulator serves on)."""
    credentials = service_account.Credentials.from_service_account_file(str(path), scopes=[SCOPE])
    credentials.refresh(google.auth.transport.requests.Request())
    return credentials


async def test_google_auth_gets_a_token_the_simulator_accepts(simulator: Sim, tmp_path: Path) -> None:
    sim, url = simulator
    sim.fcm.token_lifetime_s = 600
    credentials = await asyncio.to_thread(mint_with_google_auth, account_file(sim, url, tmp_path))
    assert credentials.token.startswith("ya29.") and sim.fcm.issued == 1
    assert 590 < (credentials.expiry.replace(tzinfo=UTC) - datetime.now(UTC)).total_seconds() <= 600
    send = {"message": {"token": "tok-1", "data": {"clarion_did": "d1"}}}
    status, body = await post(url, "/v1/projects/proj-a/messages:send", send, credentials.token)
    assert status == 200 and body["name"].startswith("projects/proj-a/messages/")
    assert [d["did"] for d in sim.state.deliveries] == ["d1"]
    # the token is the service account's: another project refuses it; an unknown token is unauthenticated
    status, body = await post(url, "/v1/projects/proj-b/messages:send", send, credentials.token)
    assert status == 403 and body["error"]["status"] == "PERMISSION_DENIED"
    status, body = await post(url, "/v1/projects/proj-a/messages:send", send, "ya29.made-up")
    assert status == 401 and body["error"]["status"] == "UNAUTHENTICATED"
    status, body = await post(url, "/v1/projects/proj-a/messages:send", send, "")
    assert status == 401 and body["error"]["details"][0]["reason"] == "CREDENTIALS_MISSING"
    assert [d["did"] for d in sim.state.deliveries] == ["d1"]


async def test_expired_access_token_is_refused_in_fcm_shape(simulator: Sim, tmp_path: Path) -> None:
    sim, url = simulator
    sim.fcm.token_lifetime_s = 1
    credentials = await asyncio.to_thread(mint_with_google_auth, account_file(sim, url, tmp_path))
    await asyncio.sleep(1.1)
    status, body = await post(url, "/v1/projects/proj-a/messages:send", {"message": {"token": "t"}}, credentials.token)
    assert status == 401
    assert body["error"]["status"] == "UNAUTHENTICATED" and body["error"]["code"] == 401
    assert body["error"]["details"][0]["reason"] == "ACCESS_TOKEN_EXPIRED"
    assert sim.state.deliveries == []


async def test_wrongly_signed_assertion_is_refused(simulator: Sim, tmp_path: Path) -> None:
    sim, url = simulator
    path = account_file(sim, url, tmp_path)
    info = json.loads(path.read_text())
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    info["private_key"] = other.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps(info))
    with pytest.raises(RefreshError, match="Invalid JWT Signature"):
        await asyncio.to_thread(mint_with_google_auth, forged)
    sim.fcm.revoke_key(info["private_key_id"])  # the right key, once deleted, is refused too
    with pytest.raises(RefreshError, match="Invalid JWT Signature"):
        await asyncio.to_thread(mint_with_google_auth, path)
    assert sim.fcm.issued == 0


def test_token_endpoint_checks_grant_audience_lifetime_and_scope() -> None:
    auth = FcmAuth()
    info = auth.service_account("http://sim/token")
    now = int(time.time())

    def grant(headers: dict[str, Any] | None = None, **claims: Any) -> tuple[int, dict[str, Any]]:
        payload = {"iss": info["client_email"], "aud": AUDIENCES[0], "iat": now, "exp": now + 3600, "scope": SCOPE}
        payload.update(claims)
        assertion = jwt.encode(payload, info["private_key"], "RS256", headers or {"kid": info["private_key_id"]})
        return auth.grant({"grant_type": JWT_BEARER, "assertion": assertion})

    status, body = grant()
    assert status == 200 and body["expires_in"] == 3600 and body["access_token"] in auth.tokens
    assert grant(aud="https://example.com/token") == (
        400,
        {"error": "invalid_grant", "error_description": "Invalid JWT: Failed audience check."},
    )
    assert grant(exp=now + 7200)[1]["error"] == "invalid_grant"  # longer than an hour
    assert grant(iat=now - 7200, exp=now - 3600)[1]["error"] == "invalid_grant"  # expired
    assert grant(scope="")[1]["error"] == "invalid_scope"
    assert grant(iss="someone@else.iam.gserviceaccount.com")[1]["error_description"].endswith("account not found")
    assert grant(headers={"kid": "not-a-key"})[1]["error_description"] == "Invalid JWT Signature."
    assert auth.grant({"grant_type": "client_credentials"})[1]["error"] == "unsupported_grant_type"
    assert auth.issued == 1


async def test_client_with_a_service_account_sends_through_the_simulator(simulator: Sim, tmp_path: Path) -> None:
    sim, url = simulator
    path = account_file(sim, url, tmp_path)
    client = FcmClient.from_settings(Settings(fcm_url=url, fcm_service_account_file=str(path)))
    try:
        assert client.project == "proj-a"  # fcm_project left at its default: the file's
        result = await client.send(message(1))
        assert isinstance(result, Delivered) and result.provider_message_id.startswith("projects/proj-a/messages/")
        assert [(d["did"], d["address"]) for d in sim.state.deliveries] == [("n_1.fcm.0", "tok-1")]
        assert sim.fcm.issued == 1
    finally:
        await client.close()
    named = FcmClient.from_settings(Settings(fcm_project="proj-x", fcm_service_account_file=str(path)))
    assert named.project == "proj-x"


async def test_concurrent_sends_share_one_token_request(simulator: Sim, tmp_path: Path) -> None:
    sim, url = simulator
    client = client_for(url, account_file(sim, url, tmp_path))
    try:
        results = await asyncio.gather(*(client.send(message(i)) for i in range(50)))
    finally:
        await client.close()
    assert all(isinstance(r, Delivered) for r in results)
    assert sim.fcm.issued == 1 and len(sim.state.deliveries) == 50


@pytest.mark.parametrize(
    ("refresh_margin_s", "reported_lifetime_s"),
    [(300.0, None), (0.0, None), (300.0, 3600)],
    ids=["refreshed-ahead", "refreshed-at-expiry", "expired-under-the-client"],
)
async def test_token_expiring_mid_run_is_refreshed_and_nothing_is_lost(
    simulator: Sim, tmp_path: Path, refresh_margin_s: float, reported_lifetime_s: int | None
) -> None:
    sim, url = simulator
    sim.fcm.token_lifetime_s = 0.5
    sim.fcm.reported_lifetime_s = reported_lifetime_s  # 3600: the client learns of expiry only from FCM's 401
    client = client_for(url, account_file(sim, url, tmp_path), refresh_margin_s)
    results = []
    try:
        for wave in range(14):  # ~1.7 s of sends: across at least two expiries
            results += await asyncio.gather(*(client.send(message(wave * 4 + i)) for i in range(4)))
            await asyncio.sleep(0.12)
    finally:
        await client.close()
    assert all(isinstance(r, Delivered) for r in results), [r for r in results if not isinstance(r, Delivered)]
    dids = [d["did"] for d in sim.state.deliveries]
    assert len(dids) == 56 and len(set(dids)) == 56  # each message delivered exactly once
    assert sim.fcm.issued >= 3 and client.tokens is not None and client.tokens.refreshes == sim.fcm.issued
    refused = [r for r in sim.state.rejected if r["kind"] == "UNAUTHENTICATED"]
    assert len(refused) >= (2 if reported_lifetime_s else 0) and len(sim.state.rejected) == len(refused)


async def test_refused_token_is_refreshed_and_retried_once(simulator: Sim, tmp_path: Path) -> None:
    sim, url = simulator
    client = client_for(url, account_file(sim, url, tmp_path))
    try:
        sim.fcm.expire_next = 1
        assert isinstance(await client.send(message(1)), Delivered)
        assert sim.fcm.issued == 2 and len(sim.state.deliveries) == 1  # a new token, then the one delivery
        await post(url, "/_sim/fcm/expire", {"times": 2}, "")
        result = await client.send(message(2))
        assert isinstance(result, AuthFailure) and result.reason == "401 UNAUTHENTICATED"
        assert sim.fcm.issued == 3 and len(sim.state.deliveries) == 1  # one refresh, one retry, then give up
    finally:
        await client.close()


async def test_a_refused_refresh_is_an_auth_failure(simulator: Sim, tmp_path: Path) -> None:
    sim, url = simulator
    path = account_file(sim, url, tmp_path)
    client = client_for(url, path)
    try:
        assert isinstance(await client.send(message(1)), Delivered)
        sim.fcm.revoke_key(json.loads(path.read_text())["private_key_id"])
        sim.fcm.expire_next = 1
        result = await client.send(message(2))
        assert isinstance(result, AuthFailure) and "Invalid JWT Signature" in result.reason
    finally:
        await client.close()


async def test_static_bearer_still_works_and_a_wrong_one_is_an_auth_failure(simulator: Sim) -> None:
    sim, url = simulator
    good = FcmClient(url, "clarion-dev", STATIC_BEARER, 5.0)
    bad = FcmClient(url, "clarion-dev", "not-the-bearer", 5.0)
    try:
        assert isinstance(await good.send(message(1)), Delivered)
        assert await bad.send(message(2)) == AuthFailure("401 UNAUTHENTICATED")
    finally:
        await good.close()
        await bad.close()
    assert [d["did"] for d in sim.state.deliveries] == ["n_1.fcm.0"]


async def test_magic_tokens_map_onto_the_taxonomy(simulator: Sim) -> None:
    sim, url = simulator
    client = FcmClient(url, "clarion-dev", STATIC_BEARER, 5.0)
    try:
        results = {
            p: await client.send(message(0, p + "x"))
            for p in ("unregistered-", "invalid-", "mismatch-", "quota-", "unavailable-", "internal-", "thirdparty-")
        }
    finally:
        await client.close()
    assert results == {
        "unregistered-": PermanentFailure("404 UNREGISTERED"),
        "invalid-": PermanentFailure("400 INVALID_ARGUMENT"),
        "mismatch-": PermanentFailure("403 SENDER_ID_MISMATCH"),
        "quota-": TransientFailure("429 QUOTA_EXCEEDED", 1.0),
        "unavailable-": TransientFailure("503 UNAVAILABLE"),
        "internal-": TransientFailure("500 INTERNAL"),
        "thirdparty-": AuthFailure("401 THIRD_PARTY_AUTH_ERROR"),
    }
    assert sim.state.deliveries == [] and len(sim.state.rejected) == 7


async def test_injected_faults_keep_their_classes(simulator: Sim) -> None:
    _, url = simulator
    client = FcmClient(url, "clarion-dev", STATIC_BEARER, 5.0)
    expected = {
        "transient": TransientFailure("503 UNAVAILABLE"),
        "throttle": TransientFailure("429 QUOTA_EXCEEDED", 2.0),
        "permanent": PermanentFailure("404 UNREGISTERED"),
    }
    try:
        for kind, result in expected.items():
            fault = {"channel": "fcm", "kind": kind, "times": 1, **({"retry_after": "2"} if kind == "throttle" else {})}
            await post(url, "/_sim/faults", fault, "")
            assert await client.send(message(1)) == result
        assert isinstance(await client.send(message(1)), Delivered)
    finally:
        await client.close()


def test_outcome_reads_http_date_retry_after_and_never_fails_401_permanently() -> None:
    later = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 60))
    quota = b'{"error":{"code":429,"status":"RESOURCE_EXHAUSTED"}}'
    result = outcome(Answer(429, {"Retry-After": later}, quota))
    assert isinstance(result, TransientFailure) and result.reason == "429 RESOURCE_EXHAUSTED"
    assert result.retry_after is not None and 55 < result.retry_after <= 60
    assert outcome(Answer(401, {}, b"<html>nope</html>")) == AuthFailure("401 UNKNOWN")
    assert outcome(Answer(403, {}, b'{"error":{"code":403,"status":"PERMISSION_DENIED"}}')) == AuthFailure(
        "403 PERMISSION_DENIED"
    )
    assert outcome(Answer(418, {}, b"")) == PermanentFailure("418 UNKNOWN")


async def test_simulator_accepts_what_the_real_api_accepts(simulator: Sim) -> None:
    sim, url = simulator
    path = "/v1/projects/p/messages:send"
    accepted = [
        {"message": {"topic": "news", "notification": {"title": "t", "body": "b"}}},
        {"message": {"condition": "'a' in topics && ('b' in topics || 'c' in topics)", "data": {"k": "v"}}},
        {"message": {"token": "tok-data", "data": {"clarion_did": "d-data"}}},  # data-only
        {
            "message": {
                "token": "tok-blocks",
                "android": {"priority": "HIGH", "ttl": "3.5s", "collapseKey": "c", "notification": {"tag": "x"}},
                "apns": {"headers": {"apns-priority": "10"}, "payload": {"aps": {"badge": 1}}},
                "webpush": {"headers": {"TTL": "60"}, "notification": {"title": "w"}},
                "fcmOptions": {"analyticsLabel": "l"},
            }
        },
    ]
    for body in accepted:
        status, answer = await post(url, path, body)
        assert status == 200, answer
    assert [(d["target"], d["address"]) for d in sim.state.deliveries] == [
        ("topic", "news"),
        ("condition", "'a' in topics && ('b' in topics || 'c' in topics)"),
        ("token", "tok-data"),
        ("token", "tok-blocks"),
    ]
    status, answer = await post(url, path, {"message": {"token": "t"}, "validate_only": True})
    assert status == 200 and answer["name"] == "projects/p/messages/fake_message_id" and len(sim.state.deliveries) == 4


@pytest.mark.parametrize(
    "body",
    [
        {"message": {}},  # no target
        {"message": {"token": "t", "topic": "x"}},  # two targets
        {"message": {"topic": "/topics/news"}},
        {"message": {"token": "t", "data": {"n": 1}}},  # data values are strings
        {"message": {"token": "t", "data": {"from": "x"}}},  # reserved key
        {"message": {"token": "t", "priority": "high"}},  # unknown field (legacy API's)
        {"message": {"token": "t", "android": {"priority": "URGENT"}}},
        {"message": {"token": "t", "android": {"ttl": 60}}},
        {"message": {"token": "t", "notification": {"title": 1}}},
        {"message": {"token": "t", "data": {"big": "x" * 5000}}},
        {"to": "t"},
        [1],
    ],
)
async def test_simulator_rejects_invalid_payloads(simulator: Sim, body: Any) -> None:
    sim, url = simulator
    status, answer = await post(url, "/v1/projects/p/messages:send", body)
    assert status == 400 and answer["error"]["status"] == "INVALID_ARGUMENT" and answer["error"]["code"] == 400
    assert sim.state.deliveries == []


async def test_service_accounts_from_the_control_endpoint(simulator: Sim, tmp_path: Path) -> None:
    """For a simulator in another process (compose, bench): it hands out a service account of its own."""
    sim, url = simulator
    status, info = await post(url, "/_sim/fcm/service_account", {"project_id": "proj-c"}, "")
    assert status == 200 and info["token_uri"] == f"{url}/token" and info["project_id"] == "proj-c"
    path = tmp_path / "sa.json"
    path.write_text(json.dumps(info))
    client = FcmClient.from_settings(Settings(fcm_url=url, fcm_service_account_file=str(path)))
    try:
        assert isinstance(await client.send(message(1)), Delivered)
    finally:
        await client.close()
    assert sim.state.deliveries[0]["did"] == "n_1.fcm.0"
