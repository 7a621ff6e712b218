"""APNs: the client speaks HTTP/2 to a simulator that speaks nothing else and verifies ES256 provider tokens."""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from clarion.agents.deliver import _order
from clarion.providers import apns
from clarion.providers.base import AuthFailure, Delivered, OutboundMessage, PermanentFailure, TransientFailure
from clarion.providers.dispatch import Order
from clarion.providers.simulator import Simulator, start_simulator
from clarion.providers.simulator import apns as sim_apns
from clarion.schemas.records import DeliveryTask, asdict
from clarion.tables.templates import Rendered
from clarion.topology.embedded import free_port

KEY_ID, TEAM_ID, TOPIC = "KEY0000042", "TEAM000042", "com.example.app"
TOKEN = "ab" * 32


class Clock:
    """time.time, except for the values it was given, returned first."""

    def __init__(self, *first: float) -> None:
        self.first = list(first)

    def __call__(self) -> float:
        return self.first.pop(0) if self.first else time.time()


class CountingKey(apns.SigningKey):
    minted = 0

    def _mint(self, now: float) -> None:
        self.minted += 1
        super()._mint(now)


@pytest.fixture
def key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def p8_file(key: ec.EllipticCurvePrivateKey, tmp_path: Path) -> str:
    path = tmp_path / f"AuthKey_{KEY_ID}.p8"
    path.write_bytes(sim_apns.p8(key))
    return str(path)


@pytest.fixture
async def sim(key: ec.EllipticCurvePrivateKey) -> AsyncIterator[Simulator]:
    """A simulator trusting only `key` (kid KEY_ID, team TEAM_ID)."""
    simulator, runner = await start_simulator(
        "127.0.0.1", free_port(), apns_account=sim_apns.Account(key.public_key(), KEY_ID, TEAM_ID)
    )
    yield simulator
    await runner.cleanup()


def message(n: int = 1, token: str = TOKEN, body: str = "hi", expires_at: float | None = None) -> OutboundMessage:
    return OutboundMessage(f"n{n}.apns.0", f"n{n}", token, Rendered(title="T", body=body), "", expires_at)


def client_for(sim: Simulator, tokens: apns.TokenSource) -> apns.ApnsClient:
    return apns.ApnsClient(sim.apns_url, TOPIC, tokens, timeout_s=5)


def reasons(sim: Simulator) -> list[str]:
    return [r.get("reason", r["kind"]) for r in sim.state.rejected]


async def h2_post(sim: Simulator, path: str, headers: dict[str, str], body: bytes = b'{"aps":{"alert":"x"}}') -> Any:
    """A raw HTTP/2 request to the simulator: (status, reason)."""
    async with httpx.AsyncClient(http1=False, http2=True) as http:
        resp = await http.post(sim.apns_url + path, content=body, headers=headers)
    assert resp.http_version == "HTTP/2"
    return resp.status_code, resp.json().get("reason") if resp.content else None


def signed(key: ec.EllipticCurvePrivateKey, iat: float, kid: str = KEY_ID, iss: str = TEAM_ID) -> dict[str, str]:
    token = jwt.encode({"iss": iss, "iat": int(iat)}, key, algorithm="ES256", headers={"kid": kid})
    return {"authorization": f"bearer {token}", "apns-topic": TOPIC, "apns-push-type": "alert"}


async def test_over_http2_with_a_token_minted_from_the_p8(sim: Simulator, p8_file: str) -> None:
    client = client_for(sim, apns.SigningKey.from_file(p8_file, KEY_ID, TEAM_ID))
    versions: list[str] = []

    async def seen(response: httpx.Response) -> None:
        versions.append(response.http_version)

    client.http.event_hooks["response"].append(seen)
    results = [await client.send(message(n)) for n in range(3)]
    await client.close()
    assert all(isinstance(r, Delivered) for r in results), results
    assert versions == ["HTTP/2"] * 3
    assert [(d["did"], d["http"], d["title"], d["body"]) for d in sim.state.deliveries] == [
        (f"n{n}.apns.0", "HTTP/2", "T", "hi") for n in range(3)
    ]
    # HTTP/1.1 cannot deliver: a client that fell back would fail here, with nothing recorded
    async with httpx.AsyncClient() as http1:
        resp = await http1.post(f"{sim.apns_url}/3/device/{TOKEN}", content=b"{}", headers={"apns-topic": TOPIC})
    assert (resp.http_version, resp.status_code) == ("HTTP/1.1", 505)
    assert len(sim.state.deliveries) == 3


async def test_headers_expiration_collapse_id_and_apns_id_arrive(sim: Simulator, p8_file: str) -> None:
    client = client_for(sim, apns.SigningKey.from_file(p8_file, KEY_ID, TEAM_ID))
    expires = time.time() + 3600.25
    long_id = OutboundMessage("n_" + "x" * 70 + ".apns.0", "n_x", TOKEN, Rendered(body="b"))
    results = [await client.send(m) for m in (message(1, expires_at=expires), message(2), long_id)]
    await client.close()
    first, second, third = sim.state.deliveries
    assert (first["expiration"], first["collapse_id"]) == (str(math.ceil(expires)), "n1.apns.0")
    assert (first["push_type"], first["priority"], first["topic"]) == ("alert", "10", TOPIC)
    assert second["expiration"] is None  # no expiry: APNs keeps it per its storage policy (0 would mean "never store")
    assert third["collapse_id"] == hashlib.sha256(long_id.delivery_id.encode()).hexdigest()  # 64 bytes
    assert results[0] == Delivered(str(uuid.uuid5(apns.APNS_ID_NAMESPACE, "n1.apns.0")))


async def test_an_expired_token_is_reminted_and_the_message_delivered_once(sim: Simulator, key: Any) -> None:
    tokens = CountingKey(key, KEY_ID, TEAM_ID, clock=Clock(time.time() - 3700))  # its first token is 61 min old
    client = client_for(sim, tokens)
    result = await client.send(message())
    await client.close()
    assert isinstance(result, Delivered), result
    assert reasons(sim) == ["ExpiredProviderToken"] and len(sim.state.deliveries) == 1
    assert tokens.minted == 2


async def test_concurrent_refusals_remint_once(sim: Simulator, key: Any) -> None:
    """Apple throttles re-minting (TooManyProviderTokenUpdates): 20 refusals of one token make one new token."""
    stale = time.time() - 3700
    tokens = CountingKey(key, KEY_ID, TEAM_ID, clock=Clock(*[stale] * 20))  # all 20 sent with a 61-minute-old token
    client = client_for(sim, tokens)
    results = await asyncio.gather(*(client.send(message(n)) for n in range(20)))
    await client.close()
    assert all(isinstance(r, Delivered) for r in results), results
    assert reasons(sim) == ["ExpiredProviderToken"] * 20 and len(sim.state.deliveries) == 20
    assert tokens.minted == 2
    assert sorted(d["did"] for d in sim.state.deliveries) == sorted(f"n{n}.apns.0" for n in range(20))


async def test_a_bad_signature_is_an_auth_failure_after_one_retry(sim: Simulator) -> None:
    other = ec.generate_private_key(ec.SECP256R1())  # right kid and team, wrong key
    tokens = CountingKey(other, KEY_ID, TEAM_ID)
    client = client_for(sim, tokens)
    result = await client.send(message())
    await client.close()
    assert result == AuthFailure("403 InvalidProviderToken")
    assert reasons(sim) == ["InvalidProviderToken"] * 2 and tokens.minted == 2 and not sim.state.deliveries


async def test_a_static_bearer_is_not_retried(sim: Simulator) -> None:
    client = client_for(sim, apns.StaticToken("sim-apns-jwt"))
    assert await client.send(message()) == AuthFailure("403 InvalidProviderToken")
    await client.close()
    assert reasons(sim) == ["InvalidProviderToken"]


async def test_a_payload_over_4kb_is_refused_before_sending(sim: Simulator, p8_file: str) -> None:
    client = client_for(sim, apns.SigningKey.from_file(p8_file, KEY_ID, TEAM_ID))
    result = await client.send(message(body="x" * 4100))
    assert isinstance(result, PermanentFailure) and result.reason.startswith("PayloadTooLarge"), result
    assert isinstance(await client.send(message(body="x" * 3900)), Delivered)  # just under the limit goes
    await client.close()
    assert not sim.state.rejected and len(sim.state.deliveries) == 1


async def test_answers_map_through_the_table(sim: Simulator, p8_file: str) -> None:
    client = client_for(sim, apns.SigningKey.from_file(p8_file, KEY_ID, TEAM_ID))
    dead = await client.send(message(1, token="dead" + "0" * 60))
    throttled = await client.send(message(2, token="0429" + "0" * 60))
    failing = await client.send(message(3, token="0500" + "0" * 60))
    bad = await client.send(message(4, token="not-hex"))
    await client.close()
    assert dead == PermanentFailure("410 Unregistered")  # "Unregistered": what suppression will look for
    assert throttled == TransientFailure("429 TooManyRequests", 1.0)
    assert failing == TransientFailure("500 InternalServerError")
    assert bad == PermanentFailure("400 BadDeviceToken")
    assert not sim.state.deliveries


def test_the_table_decides_by_reason_before_status() -> None:
    h = httpx.Headers({"retry-after": "7"})
    assert apns.outcome(429, "TooManyProviderTokenUpdates", h) == TransientFailure("429 TooManyProviderTokenUpdates", 7)
    assert apns.outcome(503, "Shutdown", h) == TransientFailure("503 Shutdown", 7)
    assert apns.outcome(403, "ExpiredProviderToken", h) == AuthFailure("403 ExpiredProviderToken")
    assert apns.outcome(400, "TopicDisallowed", h) == PermanentFailure("400 TopicDisallowed")
    assert apns.outcome(400, "IdleTimeout", h) == TransientFailure("400 IdleTimeout", 7)
    assert apns.outcome(502, "SomethingNew", h) == TransientFailure("502 SomethingNew", 7)  # unknown: by status
    assert apns.outcome(400, "SomethingNew", h) == PermanentFailure("400 SomethingNew")


def test_the_token_is_reminted_after_50_minutes() -> None:
    now = [1_800_000_000.0]
    tokens = apns.SigningKey(ec.generate_private_key(ec.SECP256R1()), KEY_ID, TEAM_ID, clock=lambda: now[0])
    first = tokens.current()
    now[0] += 49 * 60
    assert tokens.current() == first
    now[0] += 60
    second = tokens.current()
    assert second != first
    assert jwt.get_unverified_header(second) == {"alg": "ES256", "kid": KEY_ID, "typ": "JWT"}
    assert jwt.decode(second, options={"verify_signature": False}) == {"iss": TEAM_ID, "iat": 1_800_000_000 + 50 * 60}


async def test_the_simulator_is_strict(sim: Simulator, key: Any) -> None:
    now, path = time.time(), f"/3/device/{TOKEN}"
    ok = signed(key, now - 3500)
    assert await h2_post(sim, path, ok) == (200, None)
    assert await h2_post(sim, path, signed(key, now - 3700)) == (403, "ExpiredProviderToken")
    assert await h2_post(sim, path, signed(key, now + 600)) == (403, "InvalidProviderToken")  # from the future
    assert await h2_post(sim, path, signed(key, now, kid="OTHERKEY00")) == (403, "InvalidProviderToken")
    assert await h2_post(sim, path, signed(key, now, iss="OTHERTEAM0")) == (403, "InvalidProviderToken")
    assert await h2_post(sim, path, {**ok, "authorization": "bearer x.y.z"}) == (403, "InvalidProviderToken")
    assert await h2_post(sim, path, {k: v for k, v in ok.items() if k != "authorization"}) == (
        403,
        "MissingProviderToken",
    )
    assert await h2_post(sim, path, {k: v for k, v in ok.items() if k != "apns-topic"}) == (400, "MissingTopic")
    assert await h2_post(sim, path, {**ok, "apns-push-type": "shout"}) == (400, "InvalidPushType")
    assert await h2_post(sim, path, {**ok, "apns-collapse-id": "c" * 65}) == (400, "BadCollapseId")
    assert await h2_post(sim, path, {**ok, "apns-expiration": "soon"}) == (400, "BadExpirationDate")
    big = b'{"aps":{"alert":"' + b"x" * 4096 + b'"}}'
    assert await h2_post(sim, path, ok, big) == (413, "PayloadTooLarge")
    assert await h2_post(sim, path, ok, b"[]") == (400, "PayloadEmpty")
    assert await h2_post(sim, "/3/device/zz", ok) == (400, "BadDeviceToken")
    assert await h2_post(sim, "/4/other", ok) == (404, "BadPath")
    assert len(sim.state.deliveries) == 1


async def test_injected_faults_apply_over_http2(sim: Simulator, p8_file: str) -> None:
    from clarion.providers.simulator import Fault

    sim.state.faults.append(Fault("apns", "throttle", TOKEN, times=1, retry_after="3"))
    client = client_for(sim, apns.SigningKey.from_file(p8_file, KEY_ID, TEAM_ID))
    first, second = await client.send(message(1)), await client.send(message(2))
    await client.close()
    assert first == TransientFailure("429 TooManyRequests", 3.0) and isinstance(second, Delivered)
    assert [d["did"] for d in sim.state.deliveries] == ["n2.apns.0"]


def test_a_task_expiry_reaches_the_message_and_old_orders_still_decode() -> None:
    task = DeliveryTask(
        delivery_id="n1.apns.0", notification_id="n1", client_id="c", user_id="u", channel="apns", lane="critical",
        address=TOKEN, template_id="t", template_version=1, expires_at=1_900_000_000.5,
    )  # fmt: skip
    order = _order(task, Rendered(body="b"), last_attempt=False)
    over_the_pipe = msgspec.msgpack.decode(msgspec.msgpack.encode(order), type=Order)
    assert over_the_pipe.message().expires_at == 1_900_000_000.5
    fields = list(msgspec.structs.astuple(order))
    old_frame = msgspec.msgpack.encode(fields[: fields.index(1_900_000_000.5)])  # a sender from before the field
    assert msgspec.msgpack.decode(old_frame, type=Order).message().expires_at is None
    campaign_at = Order.__struct_fields__.index("campaign")
    campaign_frame = msgspec.msgpack.encode([*fields[:campaign_at], "c/spring"])  # one from before the user_id field
    decoded = msgspec.msgpack.decode(campaign_frame, type=Order)
    assert (decoded.campaign, decoded.user_id) == ("c/spring", "")
    promo_task = DeliveryTask(**{**asdict(task), "campaign": "c/spring", "lane": "promo"})
    promo = _order(promo_task, Rendered(body="b"), last_attempt=False)
    message = msgspec.msgpack.decode(msgspec.msgpack.encode(promo), type=Order).message()
    assert (message.campaign, message.user_id) == ("c/spring", "u")  # a campaign's carries its user to the provider
    assert (order.campaign, order.user_id) == ("", "")  # a critical one's status entry names its user


def test_pointed_at_the_simulator_apns_gets_the_dev_key() -> None:
    from clarion.topology.embedded import pointed_at_simulator
    from clarion.topology.settings import Settings

    s = pointed_at_simulator(Settings(), "http://127.0.0.1:1")
    assert (s.apns_url, s.apns_key_id, s.apns_team_id) == ("http://127.0.0.1:1", sim_apns.KEY_ID, sim_apns.TEAM_ID)
    token = apns.ApnsClient.from_settings(s).tokens.current()
    assert sim_apns.token_refusal(f"bearer {token}", sim_apns.dev_account(), time.time()) is None


def test_a_key_that_cannot_sign_for_apns_is_refused_at_startup(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="P-256"):
        apns.SigningKey(ec.generate_private_key(ec.SECP384R1()), KEY_ID, TEAM_ID)
    with pytest.raises(ValueError, match="key id"):
        apns.SigningKey(ec.generate_private_key(ec.SECP256R1()), "", TEAM_ID)
    assert isinstance(apns.token_source("", "", "", "static-jwt"), apns.StaticToken)
