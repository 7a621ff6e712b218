"""The channel registry: everything clarion knows about a channel, in one table.

Adding a channel is a row here (and its provider client and simulator module): the
catalog's lanes, template rendering, addresses, suppression, masking, metrics, the
provider clients and the simulator all read it. Clients and simulators are named by
module path, so this leaf module imports nothing of clarion's above the schemas.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Channel = Literal["email", "apns", "fcm", "sms"]


@dataclass(frozen=True)
class ChannelSpec:
    name: str
    provider: str  # metrics label and error-table key (providers/errors.py)
    parts: tuple[str, ...]  # template parts rendered for it
    address_field: str  # the UserProfile field that holds its address(es)
    devices: bool  # a list of device tokens (push): one delivery per device; a dead one leaves the profile
    folds_case: bool  # addresses compare case-insensitively (email)
    suppress_on: tuple[str, ...]  # fragments of a permanent failure's reason that suppress the address
    client: str  # "module:Class" of its provider client (a ProviderClient with from_settings)
    simulator: str  # module of its simulator routes (providers/simulator/)


REGISTRY: dict[str, ChannelSpec] = {
    spec.name: spec
    for spec in (
        ChannelSpec("email", "ses", ("email_subject", "email_text", "email_html"), "email", False, True, (),
                    "clarion.providers.ses:SesClient", "clarion.providers.simulator.ses"),
        ChannelSpec("apns", "apns", ("push_title", "push_body"), "apns_tokens", True, False, ("Unregistered",),
                    "clarion.providers.apns:ApnsClient", "clarion.providers.simulator.apns"),
        ChannelSpec("fcm", "fcm", ("push_title", "push_body"), "fcm_tokens", True, False, ("UNREGISTERED",),
                    "clarion.providers.fcm:FcmClient", "clarion.providers.simulator.fcm"),
        ChannelSpec("sms", "twilio", ("sms_body",), "phone", False, False, ("21610",),
                    "clarion.providers.twilio:TwilioClient", "clarion.providers.simulator.twilio"),
    )
}  # fmt: skip

CHANNELS: tuple[str, ...] = tuple(REGISTRY)
PUSH_CHANNELS: tuple[str, ...] = tuple(name for name, spec in REGISTRY.items() if spec.devices)
PROVIDERS: dict[str, str] = {name: spec.provider for name, spec in REGISTRY.items()}  # channel -> provider


def channel(name: str) -> ChannelSpec:
    """The registry's row for `name`, or a ValueError naming the channels."""
    spec = REGISTRY.get(name)
    if spec is None:
        raise ValueError(f"unknown channel {name!r}: one of {', '.join(CHANNELS)}")
    return spec


def same_address(spec: ChannelSpec, a: str, b: str) -> bool:
    return a.lower() == b.lower() if spec.folds_case else a == b
