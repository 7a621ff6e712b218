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
