"""Records exchanged on clarion's topics, their orjson codec, and request validation."""

from clarion.schemas.channels import CHANNELS
from clarion.schemas.codec import PoisonMessage, decode, encode
from clarion.schemas.records import DeadLetter, DeliveryTask, NotificationRequest, Outcome, TemplateVersion, UserProfile

__all__ = [
    "CHANNELS",
    "DeadLetter",
    "DeliveryTask",
    "NotificationRequest",
    "Outcome",
    "PoisonMessage",
    "TemplateVersion",
    "UserProfile",
    "decode",
    "encode",
]
