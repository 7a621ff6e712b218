"""What the API answers, as msgspec Structs: the OpenAPI schema's response components (web/openapi.py).

Answers are written as dicts by the handlers; these Structs describe them for clients, and the
schemathesis run (tests/test_openapi.py) checks every answer it gets against them. Objects may carry
more fields than listed (additionalProperties is left open), so adding a field never breaks a client.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType

from clarion.schemas.channels import Channel
from clarion.schemas.promo import CampaignState
from clarion.schemas.status import DeliveryState, NotificationState


class FieldError(msgspec.Struct, kw_only=True):
    """One problem with one field of a request (or a header: Authorization, Content-Type)."""

    field: str
    error: str


class Error(msgspec.Struct, kw_only=True):
    """Every 4xx and 5xx: what went wrong, and one entry per field at fault when there is one."""

    error: str
    errors: list[FieldError] | UnsetType = UNSET


class NotificationAccepted(msgspec.Struct, kw_only=True):
    notification_id: Annotated[str, Meta(description="n<partition>_<hex>: the partition holds its status")]
    status: Literal["accepted"]
    trace_id: str


class BatchItem(msgspec.Struct, kw_only=True):
    """One notification of a batch: 202 with its id, or the status and errors POST /notif would have answered."""

    index: int
    status: int
    notification_id: str | UnsetType = UNSET
    error: str | UnsetType = UNSET
    errors: list[FieldError] | UnsetType = UNSET


class BatchAccepted(msgspec.Struct, kw_only=True):
    accepted: int
    rejected: int
    trace_id: str
    results: list[BatchItem]


class NotificationStatus(msgspec.Struct, kw_only=True):
    """A notification's status, from the worker that holds it."""

    notification_id: str
    user_id: str
    status: NotificationState
    attempts: int
    duplicate_of: str | None = None
    deliveries: dict[str, DeliveryState] = {}
    failures: dict[str, str | None] = {}
    created_at: float
    updated_at: float


class TemplateSaved(msgspec.Struct, kw_only=True):
    template_id: str
    version: int
    created: Annotated[bool, Meta(description="false: this exact version was already there (200)")]


class UserAccepted(msgspec.Struct, kw_only=True):
    user_id: str


class LineError(msgspec.Struct, kw_only=True):
    """A problem with one line of POST /users/bulk (no line: the body as a whole)."""

    line: int | UnsetType = UNSET
    field: str
    error: str


class BulkUsers(msgspec.Struct, kw_only=True):
    accepted: int
    rejected: int
    errors: Annotated[list[LineError], Meta(description="the first 100")]


class BulkTooLarge(msgspec.Struct, kw_only=True):
    """413: the body went past the limit; the lines before it were read (and those accepted, written)."""

    error: str
    errors: list[LineError] | UnsetType = UNSET
    accepted: int | UnsetType = UNSET
    rejected: int | UnsetType = UNSET


class CampaignAccepted(msgspec.Struct, kw_only=True):
    campaign_id: str
    send_at: Annotated[float, Meta(description="epoch seconds")]


class CampaignCounters(msgspec.Struct, kw_only=True):
    targeted: int
    expanded: int
    executions: int
    deferred: int
    skipped: dict[str, int]
    partitions_expanded: int
    sent: int
    failed: int
    dead: int
    cancelled: int


class CampaignStatus(msgspec.Struct, kw_only=True):
    """A campaign's state and counters, from the worker that drives it."""

    campaign_id: str
    state: CampaignState
    template: Annotated[str, Meta(description="template_id@version")]
    channels: list[Channel]
    send_at: float
    created_at: float
    started_at: float | None
    finished_at: float | None
    pacing_per_s: float | None
    counters: CampaignCounters


class CampaignActionAccepted(msgspec.Struct, kw_only=True):
    campaign_id: str
    requested: Literal["pause", "resume", "cancel"]


class AudiencePreview(msgspec.Struct, kw_only=True):
    count: Annotated[int, Meta(description="a lower bound when complete is false")]
    sample: list[str]
    scanned: int
    complete: bool


class Health(msgspec.Struct, kw_only=True):
    ok: bool
    checks: dict[str, dict[str, Any]] | UnsetType = UNSET


class Ready(msgspec.Struct, kw_only=True):
    ready: bool
    checks: dict[str, dict[str, Any]] | UnsetType = UNSET


class WebhookAnswer(msgspec.Struct, kw_only=True):
    """What a provider is told: records produced, or why the message was acknowledged and dropped."""

    feedback: int | UnsetType = UNSET
    ignored: str | UnsetType = UNSET
    confirmed: bool | UnsetType = UNSET


class TwilioStatusCallback(msgspec.Struct, kw_only=True):
    """A Twilio message status callback (a form); only its final statuses become feedback."""

    MessageSid: str
    MessageStatus: str
    AccountSid: str | UnsetType = UNSET
    To: str | UnsetType = UNSET
    ErrorCode: str | UnsetType = UNSET


class SnsMessage(msgspec.Struct, kw_only=True):
    """An Amazon SNS message carrying SES events (or a subscription confirmation)."""

    Type: str
    MessageId: str
    TopicArn: str
    Message: str
    Timestamp: str
    SignatureVersion: str
    Signature: str
    SigningCertURL: str
    SubscribeURL: str | UnsetType = UNSET
    Token: str | UnsetType = UNSET
    Subject: str | UnsetType = UNSET
