"""Build the provider client for each channel from settings."""

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
