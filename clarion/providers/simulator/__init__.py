"""A provider simulator: APNs-, FCM v1-, SES v2- and Twilio-shaped endpoints on one port.

It answers with each provider's real status codes and error bodies, adds configurable
latency, injects faults on demand, and records every accepted delivery so that tests
can count exact effects. Control endpoints live under /_sim/.
"""

from __future__ import annotations

import asyncio
import importlib
import time
from functools import partial
from typing import Any

import orjson
from aiohttp import web

from clarion.providers.simulator import apns, callbacks, fcm, h2c, ses, twilio
from clarion.providers.simulator.core import Fault, Refusal, SimulatorState
from clarion.providers.simulator.core import json_response as _json
from clarion.schemas.channels import REGISTRY

# What each provider answers for an injected fault: (http status, error body maker).
TRANSIENT = {
    "apns": (503, lambda: {"reason": "ServiceUnavailable"}),
    "fcm": (
        503,
        lambda: {"error": {"code": 503, "message": "The service is currently unavailable.", "status": "UNAVAILABLE"}},
    ),
    "email": (503, lambda: {"__type": "ServiceUnavailable", "message": "Service Unavailable"}),
    "sms": (503, lambda: {"code": 20503, "message": "Service Unavailable", "status": 503}),
}
PERMANENT = {
    "apns": (410, lambda: {"reason": "Unregistered", "timestamp": int(time.time() * 1000)}),
    "fcm": (
        404,
        lambda: {
            "error": {
                "code": 404,
                "message": "Requested entity was not found.",
                "status": "NOT_FOUND",
                "details": [
                    {"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": "UNREGISTERED"}
                ],
            }
        },
    ),
    "email": (400, lambda: {"__type": "MessageRejected", "message": "Email address is not verified."}),
    "sms": (400, lambda: {"code": 21211, "message": "The 'To' number is not a valid phone number.", "status": 400}),
}


# What each provider answers when it throttles (with a Retry-After header).
THROTTLED = {
    "apns": (429, lambda: {"reason": "TooManyRequests"}),
    "fcm": (429, fcm.quota_exceeded),
    "email": (429, lambda: {"__type": "TooManyRequestsException", "message": "Too Many Requests"}),
    "sms": (429, lambda: {"code": 20429, "message": "Too Many Requests", "status": 429}),
}
FAULT_KINDS = ("transient", "permanent", "throttle")


class Simulator:
    """The aiohttp application and its state."""

    def __init__(
        self,
        latency_ms: float = 0.0,
        failure_rate: float = 0.0,
        twilio_account_sid: str = twilio.ACCOUNT_SID,
        twilio_auth_token: str = twilio.AUTH_TOKEN,
        fcm_bearer: str = fcm.STATIC_BEARER,
        fcm_token_lifetime_s: int = 3600,
        apns_account: apns.Account | None = None,
        ses_access_key: str = ses.ACCESS_KEY,
        ses_secret_key: str = ses.SECRET_KEY,
        ses_session_token: str = "",
    ) -> None:
        self.state = SimulatorState(latency_ms=latency_ms, failure_rate=failure_rate)
        self.apns_account = apns_account or apns.dev_account()  # the key APNs provider tokens must be signed with
        self.apns_tokens = apns.ProviderTokens()  # provider tokens expired early (apns_tokens.expire_next)
        self.apns_url = ""  # where APNs is served over HTTP/2 (start_simulator: the simulator's own URL)
        self.fcm = fcm.FcmAuth(static_bearer=fcm_bearer, token_lifetime_s=fcm_token_lifetime_s)
        self.twilio_account_sid = twilio_account_sid  # the credentials Twilio requests must carry
        self.twilio_auth_token = twilio_auth_token
        self.ses_account = ses.SesAccount(ses_access_key, ses_secret_key, ses_session_token)  # what SigV4 must use
        self.url = ""  # where it is served (start_simulator): SigningCertURLs name it
        self.callbacks = callbacks.Callbacks()  # Twilio status callbacks, SES events over SNS: off until enabled
        self.app = web.Application()
        self.app.add_routes(
            [
                *(route for provider in _provider_modules() for route in provider.routes(self)),
                web.get("/_sim/deliveries", self.list_deliveries),
                web.get("/_sim/stats", self.stats),
                web.delete("/_sim/deliveries", self.reset),
                web.post("/_sim/faults", self.add_fault),
                web.post("/_sim/config", self.configure),
            ]
        )

    async def _answer(self, channel: str, address: str, meta: dict[str, Any], ok: Any) -> web.Response:
        taken = await self.take(channel, address, meta)
        return ok(taken) if isinstance(taken, dict) else _json(taken.status, taken.body, taken.headers or None)

    async def take(self, channel: str, address: str, meta: dict[str, Any]) -> dict[str, Any] | Refusal:
        """After the latency: an injected fault's answer, or the receipt of an accepted (recorded) delivery."""
        if self.state.latency_ms:
            await asyncio.sleep(self.state.latency_ms / 1000.0)
        fault = self.state.fault_for(channel, address)
        if fault is not None:
            status, body = {"transient": TRANSIENT, "permanent": PERMANENT, "throttle": THROTTLED}[fault.kind][channel]
            self.state.rejected.append({"channel": channel, "address": address, "kind": fault.kind, **meta})
            return Refusal(status, body(), {"Retry-After": fault.retry_after} if fault.retry_after else {})
        receipt = {"seq": next(self.state.seq), "channel": channel, "address": address, "at": time.time(), **meta}
        self.state.deliveries.append(receipt)
        return receipt

    async def stats(self, request: web.Request) -> web.Response:
        """Counts only: cheap enough to poll while thousands of deliveries arrive."""
        rows = self.state.deliveries
        return _json(
            200,
            {
                "deliveries": len(rows),
                "rejected": len(self.state.rejected),
                "first_at": rows[0]["at"] if rows else None,
                "last_at": rows[-1]["at"] if rows else None,
            },
        )

    async def list_deliveries(self, request: web.Request) -> web.Response:
        """Accepted deliveries, filtered by channel/address/nid/did; `since` skips the first n."""
        rows = self.state.deliveries[int(request.query.get("since", 0)) :]
        for key in ("channel", "address", "nid", "did"):
            if key in request.query:
                rows = [r for r in rows if r.get(key) == request.query[key]]
        return _json(200, {"deliveries": rows, "rejected": self.state.rejected})

    async def reset(self, request: web.Request) -> web.Response:
        self.state.clear()
        return _json(200, {"ok": True})

    async def add_fault(self, request: web.Request) -> web.Response:
        body = await request.json(loads=orjson.loads)
        if body.get("channel") not in TRANSIENT or body.get("kind") not in FAULT_KINDS:
            return _json(400, {"error": "channel must be apns|fcm|email|sms and kind transient|permanent|throttle"})
        fault = Fault(
            body["channel"], body["kind"], body.get("address", "*"), body.get("times"), body.get("retry_after")
        )
        self.state.faults.append(fault)
        return _json(200, {"faults": len(self.state.faults)})

    async def configure(self, request: web.Request) -> web.Response:
        body = await request.json(loads=orjson.loads)
        self.state.latency_ms = float(body.get("latency_ms", self.state.latency_ms))
        self.state.failure_rate = float(body.get("failure_rate", self.state.failure_rate))
        rates = body.get("rates", self.state.rates)
        if not isinstance(rates, dict) or any(k not in FAULT_KINDS or not 0 <= v <= 1 for k, v in rates.items()):
            return _json(400, {"error": f"rates must map {'|'.join(FAULT_KINDS)} to probabilities"})
        self.state.rates = {k: float(v) for k, v in rates.items()}
        if "seed" in body:
            self.state.rng.seed(int(body["seed"]))
        state = self.state
        return _json(200, {"latency_ms": state.latency_ms, "failure_rate": state.failure_rate, "rates": state.rates})


async def start_simulator(
    host: str, port: int, latency_ms: float = 0.0, **options: Any
) -> tuple[Simulator, web.AppRunner]:
    """Start a simulator on host:port (`options`: Simulator's keyword arguments); the caller cleans up the runner.

    The port serves HTTP/1.1 (aiohttp: every provider but APNs, and /_sim/) and HTTP/2 with
    prior knowledge (APNs, h2c.py), told apart by a connection's first bytes.
    """
    sim = Simulator(latency_ms=latency_ms, **options)
    listening: list[h2c.Listener] = []

    async def stop_listening(app: web.Application) -> None:
        for listener in listening:
            await listener.close()
        await sim.callbacks.close()

    sim.app.on_cleanup.append(stop_listening)
    runner = web.AppRunner(sim.app, access_log=None)
    await runner.setup()
    assert runner.server is not None
    listening.append(await h2c.serve(host, port, partial(apns.handle, sim), runner.server))
    sim.apns_url = sim.url = f"http://{host}:{port}"
    return sim, runner


def _provider_modules() -> list[Any]:
    """Each channel's simulator module, as the channel registry names them, then the callback senders."""
    modules = {spec.simulator: importlib.import_module(spec.simulator) for spec in REGISTRY.values()}
    return [*modules.values(), callbacks]
