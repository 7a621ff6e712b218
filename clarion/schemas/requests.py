"""The API's request bodies as msgspec Structs: what the OpenAPI schema (web/openapi.py) is generated from.

The API checks a body by hand (validation.py, promo_validation.py, audiences.py), which names every bad
field at once; these Structs state the same rules as JSON Schema, built from the same patterns and
limits, so `msgspec.json.schema_components` turns them into the spec's component schemas. What JSON
Schema cannot state is listed with each body as `beyond` rules (a timestamp in the past, a template
that does not compile, a nesting limit), shown in the spec and in /docs. tests/test_openapi_schema.py
proves the two agree: a body the schema admits is accepted or refused only for one of those rules,
and a body it does not admit is refused.

A Struct may add keywords msgspec cannot derive (cross-field rules) with a static `extra_schema`,
given its generated component and returning the keywords to merge into it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal, NamedTuple

import msgspec
from msgspec import UNSET, Meta, UnsetType

from clarion.schemas.audiences import MAX_EXPRESSION_CHARS, MAX_USER_IDS
from clarion.schemas.channels import Channel
from clarion.schemas.promo_validation import MAX_PACING_PER_S
from clarion.schemas.validation import (
    APNS_TOKEN_RE,
    E164_RE,
    EMAIL_RE,
    FCM_TOKEN_RE,
    HHMM_RE,
    ID_RE,
    INT64_MAX,
    LOCALE_RE,
    MAX_DEPTH,
    MAX_ENCODED_BYTES,
    MAX_ENTRIES,
    MAX_KEY_CHARS,
    MAX_TAGS,
    PARAM_NAME_RE,
    SOURCE_MAX,
    TAG_RE,
    TEMPLATE_PARTS,
    VERSION_MAX,
    _zones,
)


class Beyond(NamedTuple):
    """A rule the API checks that JSON Schema cannot state: the field a refusal names, its status, the rule."""

    field: str
    status: int
    rule: str


FREE_JSON = (
    f"Free JSON, at most {MAX_DEPTH} levels deep, {MAX_ENTRIES} entries per object or list, "
    f"{MAX_KEY_CHARS}-character keys and {MAX_ENCODED_BYTES // 1024} KiB as JSON."
)
# What is_id admits (path segments: also never only dots), without a lookahead so every regex engine reads it.
PATH_ID_PATTERN = r"^[A-Za-z0-9._:@\-]*[A-Za-z0-9_:@\-][A-Za-z0-9._:@\-]*$"

Id = Annotated[str, Meta(pattern=ID_RE.pattern, description="1-128 letters, digits or ._:@-")]
PathId = Annotated[
    str,
    Meta(pattern=PATH_ID_PATTERN, min_length=1, max_length=128,
         description="1-128 letters, digits or ._:@-, not only dots"),
]  # fmt: skip
ClientId = Annotated[
    str,
    Meta(pattern=ID_RE.pattern, description="Optional: the API key names the client; another one is refused (403)."),
]
Version = Annotated[int, Meta(ge=1, le=INT64_MAX)]
Channels = Annotated[list[Channel], Meta(min_length=1)]
Timestamp = Annotated[
    float | Annotated[datetime, Meta(tz=True)],  # tz: the schema's "date-time", RFC 3339 (an offset is part of it)
    Meta(description="Epoch seconds, or an RFC 3339 timestamp with its offset (2026-01-01T09:00:00Z)"),
]
ParamName = Annotated[str, Meta(pattern=PARAM_NAME_RE.pattern)]
Params = Annotated[
    dict[ParamName, Any],
    Meta(max_length=MAX_ENTRIES, description="Template variables: names a template can write as {{ name }}. "
         + FREE_JSON),
]  # fmt: skip
HHMM = Annotated[str, Meta(pattern=HHMM_RE.pattern, description="24-hour local time HH:MM")]
Timezone = Literal[tuple(sorted(_zones()))]  # type: ignore[valid-type]  # the IANA zones this machine knows

PARAMS_LIMITS = "at most {depth} levels deep, {entries} entries per object or list, {keys}-character keys, {kib} KiB"
_LIMITS = PARAMS_LIMITS.format(depth=MAX_DEPTH, entries=MAX_ENTRIES, keys=MAX_KEY_CHARS, kib=MAX_ENCODED_BYTES // 1024)
CLIENT_RULE = Beyond("client_id", 403, "when given, is the API key's client")


class NotificationBody(msgspec.Struct, kw_only=True):
    """POST /notif (and each item of POST /notif/batch): one notification to one user of the key's client."""

    idempotency_key: Id
    user_id: Id
    template_id: Id
    channels: Annotated[
        Channels | Channel, Meta(description="A channel or a list of them; each one the template has content for")
    ] | UnsetType = UNSET
    channel: Annotated[Any, Meta(description="Old spelling of channels, read only when channels is absent",
                                 extra_json_schema={"deprecated": True})] = UNSET  # fmt: skip
    template_version: Annotated[Version | None, Meta(description="null: the latest version")] = None
    params: Params = {}
    expires_at: Timestamp | None = None
    client_id: ClientId | UnsetType = UNSET

    beyond: ClassVar[tuple[Beyond, ...]] = (
        Beyond("params", 400, _LIMITS),
        Beyond("expires_at", 400, "is in the future"),
        CLIENT_RULE,
    )

    @staticmethod
    def extra_schema(component: dict[str, Any]) -> dict[str, Any]:
        channels = component["properties"]["channels"]
        return {"anyOf": [{"required": ["channels"]}, {"required": ["channel"], "properties": {"channel": channels}}]}


class NotificationBatchBody(msgspec.Struct, kw_only=True):
    """POST /notif/batch: notifications checked one by one; an item that breaks NotificationBody is
    refused in its own result (status 400), not with the whole request."""

    notifications: Annotated[list[NotificationBody], Meta(min_length=1, max_length=1000)]  # max: settings


class TemplateBody(msgspec.Struct, kw_only=True):
    """POST /template: one immutable version of a template, Jinja2 source per part.

    At least one part; email needs email_subject and email_text or email_html; push (APNs, FCM)
    needs push_title or push_body; SMS needs sms_body. An empty string is no part."""

    template_id: Id
    version: Annotated[int, Meta(ge=1, le=VERSION_MAX)]
    email_subject: Annotated[str, Meta(max_length=SOURCE_MAX)] | None = None
    email_text: Annotated[str, Meta(max_length=SOURCE_MAX)] | None = None
    email_html: Annotated[str, Meta(max_length=SOURCE_MAX)] | None = None
    push_title: Annotated[str, Meta(max_length=SOURCE_MAX)] | None = None
    push_body: Annotated[str, Meta(max_length=SOURCE_MAX)] | None = None
    sms_body: Annotated[str, Meta(max_length=SOURCE_MAX)] | None = None
    critical_override: Annotated[bool, Meta(description="campaigns reach users who opted out (not suppressed)")] = False
    client_id: ClientId | UnsetType = UNSET

    beyond: ClassVar[tuple[Beyond, ...]] = (
        *(Beyond(part, 400, "compiles as a Jinja2 template within the sandbox's limits") for part in TEMPLATE_PARTS),
        CLIENT_RULE,
    )

    @staticmethod
    def extra_schema(component: dict[str, Any]) -> dict[str, Any]:
        def given(part: str) -> dict[str, Any]:
            return {"required": [part], "properties": {part: {"type": "string", "minLength": 1}}}

        def empty(*parts: str) -> dict[str, Any]:
            blank = {"anyOf": [{"type": "null"}, {"type": "string", "maxLength": 0}]}
            return {"properties": {part: blank for part in parts}}

        email = ("email_subject", "email_text", "email_html")
        return {
            "allOf": [
                {"anyOf": [given(part) for part in TEMPLATE_PARTS]},
                {"anyOf": [empty(*email), {"allOf": [given("email_subject"),
                                                      {"anyOf": [given("email_text"), given("email_html")]}]}]},
            ]
        }  # fmt: skip


class QuietHoursBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A daily window in the user's time zone when promotional messages wait; it may wrap midnight."""

    start: HHMM
    end: HHMM


class UserBody(msgspec.Struct, kw_only=True):
    """POST /users (and each line of POST /users/bulk): a user's addresses and preferences, replacing the last."""

    user_id: Id
    email: Annotated[str, Meta(pattern=EMAIL_RE.pattern)] | None = None
    phone: Annotated[str, Meta(pattern=E164_RE.pattern, description="E.164, such as +14155550100")] | None = None
    apns_tokens: list[Annotated[str, Meta(pattern=APNS_TOKEN_RE.pattern)]] = []
    fcm_tokens: list[Annotated[str, Meta(pattern=FCM_TOKEN_RE.pattern)]] = []
    locale: Annotated[str, Meta(pattern=LOCALE_RE.pattern, description="BCP 47, such as en or pt-BR")] = "en"
    timezone: Annotated[Timezone, Meta(description="An IANA time zone")] = "UTC"  # type: ignore[valid-type]
    attributes: Annotated[
        dict[Annotated[str, Meta(max_length=MAX_KEY_CHARS)], Any],
        Meta(max_length=MAX_ENTRIES, description="What audiences select on. " + FREE_JSON),
    ] = {}
    tags: Annotated[list[Annotated[str, Meta(pattern=TAG_RE.pattern)]], Meta(max_length=MAX_TAGS)] = []
    promo_opt_out: Annotated[bool, Meta(description="no promotional messages at all")] = False
    channel_opt_out: Annotated[list[Channel], Meta(description="no promotional messages on these")] = []
    quiet_hours: QuietHoursBody | None = None
    client_id: ClientId | UnsetType = UNSET

    beyond: ClassVar[tuple[Beyond, ...]] = (
        Beyond("attributes", 400, _LIMITS),
        Beyond("quiet_hours.end", 400, "differs from quiet_hours.start"),
        CLIENT_RULE,
    )


class AudienceBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Exactly one of {"all": true}, {"user_ids": [...]} or {"where": "<expression>"} (README, Campaigns)."""

    all: Annotated[bool | None, Meta(description="true: every user; false or null: see user_ids or where")] = False
    user_ids: Annotated[list[PathId], Meta(min_length=1, max_length=MAX_USER_IDS)] | None = None
    where: Annotated[str, Meta(max_length=MAX_EXPRESSION_CHARS)] | None = None

    beyond: ClassVar[tuple[Beyond, ...]] = (Beyond("audience.where", 422, "parses as an audience expression"),)

    @staticmethod
    def extra_schema(component: dict[str, Any]) -> dict[str, Any]:
        return {
            "oneOf": [
                {"required": ["all"], "properties": {"all": {"const": True}}},
                {"required": ["user_ids"], "properties": {"user_ids": {"type": "array"}}},
                {"required": ["where"], "properties": {"where": {"type": "string"}}},
            ]
        }


class SendWindowBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Hours of each user's local day the campaign may be sent in; it may wrap midnight."""

    start: HHMM
    end: HHMM


class CampaignBody(msgspec.Struct, kw_only=True):
    """POST /promo: one template to an audience of the key's client's users, now or at send_at."""

    campaign_id: Annotated[str, Meta(pattern=ID_RE.pattern, description="Idempotent per client")]
    template_id: Id
    template_version: Annotated[Version | None, Meta(description="null: the latest when the campaign starts")] = None
    channels: Annotated[Channels, Meta(description="In preference order: each user gets the first they can receive")]
    audience: AudienceBody
    params: Annotated[
        dict[Annotated[str, Meta(pattern=PARAM_NAME_RE.pattern, extra_json_schema={"not": {"const": "user"}})], Any],
        Meta(max_length=MAX_ENTRIES, description="Template variables besides `user` (the user's id and attributes). "
             + FREE_JSON),
    ] = {}  # fmt: skip
    send_at: Annotated[Timestamp | None, Meta(description="null or past: now; at most a year ahead")] = None
    window: SendWindowBody | None = None
    pacing_per_s: Annotated[float, Meta(ge=0, le=MAX_PACING_PER_S, description="0: as fast as the lanes take")] = 0
    client_id: ClientId | UnsetType = UNSET

    beyond: ClassVar[tuple[Beyond, ...]] = (
        Beyond("params", 400, _LIMITS),
        Beyond("send_at", 400, "is at most a year ahead"),
        *AudienceBody.beyond,
        CLIENT_RULE,
    )


class AudiencePreviewBody(msgspec.Struct, kw_only=True):
    """POST /audiences/preview: an audience as POST /promo takes it."""

    audience: AudienceBody
    client_id: ClientId | UnsetType = UNSET

    beyond: ClassVar[tuple[Beyond, ...]] = (*AudienceBody.beyond, CLIENT_RULE)


class DeadLetterReplayBody(msgspec.Struct, kw_only=True):
    """POST /ui/api/dlq/replay: dead letters of the key's client, by the ids the dashboard lists."""

    ids: Annotated[list[Annotated[str, Meta(description="<partition>:<offset>")]], Meta(min_length=1, max_length=100)]


class TemplatePreviewBody(msgspec.Struct, kw_only=True):
    """POST /ui/api/templates/preview: one of the key's templates rendered for a channel."""

    template_id: str
    version: Annotated[int | None, Meta(description="null: the latest")] = None
    channel: Channel
    params: dict[str, Any] = {}

