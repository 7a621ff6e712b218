"""What every simulated provider endpoint shares: JSON answers, the simulator's state (recorded
deliveries, injected faults), and what a provider module may use of the simulator serving it (`Host`).

The Simulator in __init__.py puts the provider modules together; they take what they share from
here and never import the package.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
from aiohttp import web


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json", headers=headers)


@dataclass
class Fault:
    channel: str
    kind: str  # transient | permanent | throttle
    address: str = "*"
    times: int | None = None  # None: every matching request
    retry_after: str | None = None  # throttle: the Retry-After header (seconds or an HTTP date)


@dataclass(frozen=True)
class Refusal:
    """A provider's error answer."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class SimulatorState:
    latency_ms: float = 0.0
    failure_rate: float = 0.0  # transient faults, per request
    rates: dict[str, float] = field(default_factory=dict)  # more faults by kind (throttle, permanent), per request
    rng: random.Random = field(default_factory=lambda: random.Random(0))  # seeded: a run's faults repeat
    faults: list[Fault] = field(default_factory=list)
    deliveries: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    seq: Any = field(default_factory=itertools.count)

    def clear(self) -> None:
        """Forget the faults, deliveries and refusals (credentials the simulator issued stay valid)."""
        self.faults.clear()
        self.deliveries.clear()
        self.rejected.clear()

    def fault_for(self, channel: str, address: str) -> Fault | None:
        for fault in self.faults:
            if fault.channel == channel and fault.address in ("*", address) and fault.times != 0:
                if fault.times is not None:
                    fault.times -= 1
                return fault
        if not (self.failure_rate or self.rates):
            return None
        draw = self.rng.random()
        for kind, rate in (("transient", self.failure_rate), *self.rates.items()):
            if draw < rate:
                return Fault(channel, kind, retry_after="1" if kind == "throttle" else None)
            draw -= rate
        return None


class Host(Protocol):
    """What a provider module uses of the simulator serving it (the package's Simulator); each module
    adds its own provider's parts (apns.ApnsHost, fcm.FcmHost, ses.SesHost, twilio.TwilioHost, ...)."""

    state: SimulatorState
    url: str  # where it is served

    async def take(self, channel: str, address: str, meta: dict[str, Any]) -> dict[str, Any] | Refusal:
        """After the latency: an injected fault's answer, or the receipt of an accepted (recorded) delivery."""

    async def _answer(self, channel: str, address: str, meta: dict[str, Any], ok: Any) -> web.Response:
        """`ok(receipt)` for an accepted delivery, else the fault's answer as JSON."""
