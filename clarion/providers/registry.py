"""Build the provider client for each channel from settings, and each channel's fallback account."""

from __future__ import annotations

from clarion.providers.apns import ApnsClient
from clarion.providers.base import ProviderClient
from clarion.providers.fcm import FcmClient
from clarion.providers.ses import SesClient, credential_source
from clarion.providers.twilio import TwilioClient
from clarion.topology.settings import Settings


def build_clients(s: Settings) -> dict[str, ProviderClient]:
    """One client per channel, pointed at the endpoints the settings name."""
    t = s.provider_timeout_s
    return {
        "apns": ApnsClient.from_settings(s),
        "fcm": FcmClient.from_settings(s),
        "email": SesClient(
            s.ses_url,
            s.ses_region,
            credential_source(s.ses_credentials, s.ses_access_key, s.ses_secret_key, s.ses_session_token),
            s.ses_from,
            t,
            s.ses_configuration_set,
        ),
        "sms": TwilioClient(
            s.twilio_url, s.twilio_account_sid, s.twilio_auth_token, s.twilio_from, s.status_callback_url, t,
            messaging_service_sid=s.twilio_messaging_service_sid,
        ),
    }


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
