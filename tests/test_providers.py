"""Provider clients build exactly the requests their APIs expect."""

from __future__ import annotations

from urllib.parse import urlencode

from clarion.providers.base import OutboundMessage
from clarion.providers.twilio import TwilioClient
from clarion.tables.templates import Rendered


def test_twilio_form_is_what_urlencode_would_send() -> None:
    client = TwilioClient("http://x", "AC1", "t", "+15550000000", "http://api/callbacks/twilio", 1)
    message = OutboundMessage("n_1.sms.0", "n_1", "+14155550100", Rendered(body="Héllo & bye=1 +x"), "t")
    expected = {
        "To": "+14155550100",
        "From": "+15550000000",
        "Body": "Héllo & bye=1 +x",
        "StatusCallback": "http://api/callbacks/twilio?nid=n_1&did=n_1.sms.0",
    }
    assert client.form(message) == urlencode(expected).encode()
    bare = TwilioClient("http://x", "AC1", "t", "+15550000000", "", 1)
    assert bare.form(message) == urlencode({k: v for k, v in expected.items() if k != "StatusCallback"}).encode()


def test_simulator_random_faults_are_seeded_and_follow_their_rates() -> None:
    from clarion.providers.simulator import SimulatorState

    def kinds(seed: int) -> list[str | None]:
        state = SimulatorState(failure_rate=0.2, rates={"throttle": 0.1, "permanent": 0.05})
        state.rng.seed(seed)
        return [(f.kind if (f := state.fault_for("sms", "+14155550100")) else None) for _ in range(4000)]

    first, again, other = kinds(7), kinds(7), kinds(8)
    assert first == again and first != other  # the same seed, the same faults
    share = {kind: first.count(kind) / len(first) for kind in ("transient", "throttle", "permanent", None)}
    assert abs(share["transient"] - 0.2) < 0.03 and abs(share["throttle"] - 0.1) < 0.02
    assert abs(share["permanent"] - 0.05) < 0.015 and abs(share[None] - 0.65) < 0.03
