"""The topic catalog: every topic clarion uses, in one readable place.

Keys are chosen so that everything one agent reads is local to it:
- critical requests, the users topic and the per-channel lanes are keyed by client/user_id with
  the same partition count, so the idempotency and users tables (changelogs of the same
  count) sit on the worker that consumes a user's requests: dedupe + route is one local step;
- the status table is keyed by notification_id but lives on the user's partition too: the
  stage that produces an outcome folds it into the status right away;
- outcomes, the output stream for whoever watches results, are keyed by notification_id;
- templates and api_keys are single partitions: small, totally ordered, and read whole by
  every worker and API process.

Batched topics carry a JSON array of values per record (or one object), all keyed to
the record's partition (see clarion/schemas/codec.py); the rest carry one object.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import msgspec

from clarion.schemas.records import (
    CHANNELS,
    ApiKey,
    DeadLetter,
    DeliveryTask,
    Feedback,
    NotificationRequest,
    Outcome,
    TemplateVersion,
    UserProfile,
)
from clarion.topology.settings import Settings


@dataclass(frozen=True)
class TopicSpec:
    name: str  # logical name, used in code and replay files
    topic: str  # the Kafka topic name
    partitions: int
    key: str
    value: type[msgspec.Struct]
    compacted: bool
    purpose: str
    batched: bool = False


def lane_topic(lane: str, channel: str) -> str:
    """Logical name of a delivery lane, e.g. critical.email."""
    return f"{lane}.{channel}"


USER_KEY = "client/user_id"  # the key of every topic co-partitioned with the users table
# Feedback knows only the ids clarion gave the provider: it goes to the partition the
# notification id names (n<partition>_…), where the notification's status and user live.
FEEDBACK_KEY = "notification_id (on the partition it names)"
LANES = ("critical",)  # each lane has its own delivery topics and retry tiers


def retry_topic(lane: str, delay_s: float) -> str:
    """Logical name of a lane's retry topic whose tasks wait `delay_s` seconds, e.g. critical.retry.5s."""
    return f"{lane}.retry.{delay_s:g}s"


def catalog(s: Settings) -> dict[str, TopicSpec]:
    """Every topic with its partitions, key, value schema, cleanup policy and purpose."""
    crit = s.critical_partitions
    specs = [
        TopicSpec(
            "users", "", crit, USER_KEY, UserProfile, True,
            "User profiles (addresses, locale); folded into the users table.",
        ),
        TopicSpec(
            "templates", "", 1, "client/template_id@version", TemplateVersion, True,
            "Template versions; tailed into memory by every worker and API process.",
        ),
        TopicSpec(
            "api_keys", "", 1, "key_id", ApiKey, True,
            "API keys (client, scopes, SHA-256 of the secret; never the secret); tailed by every process.",
        ),
        TopicSpec(
            "critical.requests", "", crit, USER_KEY, NotificationRequest, False,
            "Critical notifications accepted by POST /notif and /notif/batch; deduped and routed.",
            batched=True,
        ),
        *(
            TopicSpec(
                lane_topic("critical", ch), "", crit, USER_KEY, DeliveryTask, False,
                f"Critical {ch} deliveries waiting for the {ch} provider.",
                batched=True,
            )
            for ch in CHANNELS
        ),
        *(
            TopicSpec(
                retry_topic(lane, delay), "", crit, USER_KEY, DeliveryTask, False,
                f"{lane.capitalize()} deliveries that failed transiently (or found their delivery in flight), "
                f"held {delay:g}s before going back to their lane.",
                batched=True,
            )
            for lane in LANES
            for delay in s.retry_delays()
        ),
        TopicSpec(
            "feedback", "", crit, FEEDBACK_KEY, Feedback, False,
            "Delivery feedback from provider webhooks (Twilio status callbacks, SES events via SNS); "
            "folded into the status and suppression on the notification's partition.",
            batched=True,
        ),
        TopicSpec(
            "outcomes", "", s.outcome_partitions, "notification_id", Outcome, False,
            "Every accepted/duplicate/sent/retrying/failed/dead_lettered result, for downstream consumers.",
            batched=True,
        ),
        TopicSpec(
            "dlq", "", 4, "original key", DeadLetter, False,
            "Messages clarion gave up on: poison input, exhausted retries; with the reason.",
        ),
    ]  # fmt: skip
    return {spec.name: replace(spec, topic=f"{s.topic_prefix}.{spec.name}") for spec in specs}
