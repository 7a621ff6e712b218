"""Provider clients (one small interface) and the provider simulator."""

from clarion.providers.base import (
    Delivered,
    OutboundMessage,
    PermanentFailure,
    ProviderClient,
    SendResult,
    TransientFailure,
)

__all__ = [
    "Delivered",
    "OutboundMessage",
    "PermanentFailure",
    "ProviderClient",
    "SendResult",
    "TransientFailure",
]
