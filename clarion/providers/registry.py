"""Build the provider client for each channel from settings, and each channel's fallback account."""

from __future__ import annotations

import importlib
from typing import Any

from clarion.providers.base import ProviderClient
from clarion.providers.ses import SesClient, credential_source
from clarion.providers.twilio import TwilioClient
from clarion.schemas.channels import REGISTRY, ChannelSpec
from clarion.topology.settings import Settings


def build_clients(s: Settings) -> dict[str, ProviderClient]:
    """One client per channel of the registry, pointed at the endpoints the settings name."""
    return {name: client_class(spec).from_settings(s) for name, spec in REGISTRY.items()}


def client_class(spec: ChannelSpec) -> Any:
    """The provider client class the channel registry names for `spec`."""
    module, name = spec.client.split(":")
    return getattr(importlib.import_module(module), name)


def build_fallbacks(s: Settings) -> dict[str, ProviderClient]:
    """A second account per channel, for the channels that have one configured (dispatch fails over to it).

    email: a second SES endpoint (`ses_fallback_url`, in `ses_fallback_region` or else
    `ses_region`), signed from the same credentials source (AWS credentials are not
    regional; the sender identity must be verified in that region too). sms: a second
    Twilio account (`twilio_fallback_account_sid`, `_auth_token`, `_from`: a number of
    that account), same StatusCallback. APNs and FCM have none: an APNs key or topic and
    an FCM project belong to one app, and a device token is only valid for the app or
    project that registered it, so another account could not reach the same devices.
    """
    t = s.provider_timeout_s
    fallbacks: dict[str, ProviderClient] = {}
    if s.ses_fallback_url:
        fallbacks["email"] = SesClient(
            s.ses_fallback_url,
            s.ses_fallback_region or s.ses_region,
            credential_source(s.ses_credentials, s.ses_access_key, s.ses_secret_key, s.ses_session_token),
            s.ses_from,
            t,
            s.ses_configuration_set,
        )
    if s.twilio_fallback_account_sid:
        if not (s.twilio_fallback_auth_token and s.twilio_fallback_from):
            raise ValueError(
                "CLARION_TWILIO_FALLBACK_ACCOUNT_SID needs CLARION_TWILIO_FALLBACK_AUTH_TOKEN and "
                "CLARION_TWILIO_FALLBACK_FROM (a number of that account)"
            )
        fallbacks["sms"] = TwilioClient(
            s.twilio_url, s.twilio_fallback_account_sid, s.twilio_fallback_auth_token, s.twilio_fallback_from,
            s.status_callback_url, t,
        )  # fmt: skip
    return fallbacks
