"""The topic catalog: every topic clarion uses, in one readable place.

Keys are chosen so that everything one agent reads is local to it:
- critical requests, the users topic and the per-channel lanes are keyed by client/user_id with
  the same partition count, so the idempotency and users tables (changelogs of the same
  count) sit on the worker that consumes a user's requests: dedupe + route is one local step;
- the status table is keyed by notification_id but lives on the user's partition too: the
  stage that produces an outcome folds it into the status right away;
- outcomes, the output stream for whoever watches results, are keyed by notification_id;
- templates, api_keys and promo.controls are single partitions: small, totally ordered, and
  read whole by every worker and API process;
- promotional campaigns (the jobs) live on promo.jobs, keyed by client/campaign_id, with the
  campaigns table co-partitioned: the worker that owns a job's partition drives it (its lease);
- promo.expand carries one expansion command per users partition: co-partitioned with the
  users table, so each worker expands the users it holds, and the cursors table beside it
  keeps where each partition's expansion is;
- each lane (critical, promo) has its own delivery topics per channel and retry tiers,
  keyed by user, with the lane's partition count: promo's 8 partitions cannot read the
  24-partition user tables, so every per-user decision for promo is made during expansion.

`CO_PARTITIONED` lists what must share a partition count, checked when the catalog is built.

Batched topics carry a JSON array of values per record (or one object), all keyed to
the record's partition (see clarion/schemas/codec.py); the rest carry one object.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import msgspec

from clarion.schemas.channels import CHANNELS
from clarion.schemas.promo import CampaignControl, CampaignEvent, ExpandCommand
from clarion.schemas.records import (
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
    replication: int = 1  # replicas, from settings.replication_factor
    writers: tuple[str, ...] = ()  # who produces to it: a stage (agents/<stage>.py) or a WRITER
    readers: tuple[str, ...] = ()  # who reads it: a stage, or a READER


# Who else writes or reads topics, besides the stages (one agents/<stage>.py each, consuming its own topics).
# A stage whose topic is keyed by user also writes that topic: an item found on the wrong partition is
# forwarded to its own (agents/guard.py).
WRITERS = {"api": "the HTTP API (clarion api)", "cli": "clarion keys create|revoke, users import, dlq replay"}
READERS = {
    "views": "every worker and API process tails it whole into memory",
    "dashboard": "the API's /ui follows its end",
    "cli": "clarion dlq list|show|replay",
    "downstream": "whoever watches results",
}


@dataclass(frozen=True)
class Lane:
    """A delivery lane: its own topics per channel, retry tiers and agents, so one lane never waits on another."""

    name: str
    partitions: int
    concurrency: int  # actors per deliver agent
    folds_status: bool  # its partitions are the users' (critical): outcomes fold into the status table
    purpose: str


def lanes(s: Settings) -> list[Lane]:
    return [
        Lane("critical", s.critical_partitions, s.deliver_concurrency, True,
             "one-off notifications (POST /notif), routed where the user lives"),
        Lane("promo", s.promo_partitions, s.promo_concurrency, False,
             "campaign executions (POST /promo), expanded where the users live"),
    ]  # fmt: skip


LANES = ("critical", "promo")  # the lanes' names, in priority order


def lane_topic(lane: str, channel: str) -> str:
    """Logical name of a delivery lane's topic for one channel, e.g. critical.email."""
    return f"{lane}.{channel}"


def retry_topic(lane: str, delay_s: float) -> str:
    """Logical name of a lane's retry topic whose tasks wait `delay_s` seconds, e.g. critical.retry.5s."""
    return f"{lane}.retry.{delay_s:g}s"


USER_KEY = "client/user_id"  # the key of every topic co-partitioned with the users table
CAMPAIGN_KEY = "client/campaign_id"
# Feedback knows only the ids clarion gave the provider: it goes to the partition the
# notification id names (n<partition>_…), where the notification's status and user live.
FEEDBACK_KEY = "notification_id (on the partition it names)"

# Topics and tables read together by one agent: each group must have one partition count.
CO_PARTITIONED = (
    ("users", "critical.requests", "feedback", "promo.expand", "table:users", "table:idempotency",
     "table:status", "table:suppressed", "table:cursors", "table:frequency",
     *(lane_topic("critical", ch) for ch in CHANNELS)),
    ("promo.jobs", "table:campaigns"),
)  # fmt: skip
TABLE_PARTITIONS = {  # table -> the topic whose partition count its changelog has
    "users": "users", "idempotency": "users", "status": "users", "suppressed": "users",
    "cursors": "users", "frequency": "users", "campaigns": "promo.jobs",
}  # fmt: skip


STAGES = ("users", "dedupe", "deliver", "retry", "feedback", "schedule", "fanout")


def check_co_partitioned(specs: dict[str, TopicSpec]) -> None:
    """Raise if a co-partitioned group has topics of different partition counts."""
    for group in CO_PARTITIONED:
        counts = {
            name: specs[TABLE_PARTITIONS[name[6:]] if name.startswith("table:") else name].partitions
            for name in group
        }
        if len(set(counts.values())) > 1:
            raise ValueError(f"topics read together must have one partition count: {counts}")


def catalog(s: Settings) -> dict[str, TopicSpec]:
    """Every topic with its partitions, key, value schema, cleanup policy and purpose."""
    crit, promo = s.critical_partitions, s.promo_partitions
    specs = [
        TopicSpec(
            "users", "", crit, USER_KEY, UserProfile, True,
            "User profiles (addresses, locale); folded into the users table.",
            writers=("api", "cli", "users"), readers=("users",),
        ),
        TopicSpec(
            "templates", "", 1, "client/template_id@version", TemplateVersion, True,
            "Template versions; tailed into memory by every worker and API process.",
            writers=("api",), readers=("views",),
        ),
        TopicSpec(
            "api_keys", "", 1, "key_id", ApiKey, True,
            "API keys (client, scopes, SHA-256 of the secret; never the secret); tailed by every process.",
            writers=("cli",), readers=("views",),
        ),
        TopicSpec(
            "critical.requests", "", crit, USER_KEY, NotificationRequest, False,
            "Critical notifications accepted by POST /notif and /notif/batch; deduped and routed.",
            batched=True,
            writers=("api", "dedupe"), readers=("dedupe",),
        ),
        *(
            TopicSpec(
                lane_topic(lane.name, ch), "", lane.partitions, USER_KEY, DeliveryTask, False,
                f"{lane.name.capitalize()} {ch} deliveries waiting for the {ch} provider: {lane.purpose}.",
                batched=True,
                writers=("dedupe" if lane.name == "critical" else "fanout", "retry", "deliver", "cli"),
                readers=("deliver",),
            )
            for lane in lanes(s)
            for ch in CHANNELS
        ),
        *(
            TopicSpec(
                retry_topic(lane.name, delay), "", lane.partitions, USER_KEY, DeliveryTask, False,
                f"{lane.name.capitalize()} deliveries that failed transiently, found their delivery in flight "
                f"or must wait (quiet hours, a paused campaign), held {delay:g}s before going back to their lane.",
                batched=True,
                writers=("deliver", "retry", "fanout") if lane.name == "promo" else ("deliver", "retry"),
                readers=("retry",),
            )
            for lane in lanes(s)
            for delay in s.retry_delays()
        ),
        TopicSpec(
            "promo.jobs", "", promo, CAMPAIGN_KEY, CampaignEvent, False,
            "Campaign commands (create, pause, resume, cancel) and expansion progress; folded into the "
            "campaigns table by the worker that owns the partition (the job's lease).",
            writers=("api", "fanout"), readers=("schedule",),
        ),
        TopicSpec(
            "promo.expand", "", crit, "partition (one command per users partition)", ExpandCommand, False,
            "A started campaign, once per users partition: each worker expands the users it holds.",
            writers=("schedule",), readers=("fanout",),
        ),
        TopicSpec(
            "promo.controls", "", 1, CAMPAIGN_KEY, CampaignControl, True,
            "Each campaign's state (sending, paused, cancelled, done); tailed by every worker, so "
            "expansion and the promo lanes stop or hold a campaign's messages.",
            writers=("schedule",), readers=("views",),
        ),
        TopicSpec(
            "feedback", "", crit, FEEDBACK_KEY, Feedback, False,
            "Delivery feedback from provider webhooks (Twilio status callbacks, SES events via SNS); "
            "folded into the status and suppression on the notification's partition.",
            batched=True,
            writers=("api", "deliver", "feedback"), readers=("feedback",),
        ),
        TopicSpec(
            "outcomes", "", s.outcome_partitions, "notification_id", Outcome, False,
            "Every accepted/duplicate/sent/retrying/failed/dead_lettered result, for downstream consumers.",
            batched=True,
            writers=("dedupe", "deliver", "retry", "feedback"), readers=("dashboard", "downstream"),
        ),
        TopicSpec(
            "dlq", "", 4, "original key", DeadLetter, False,
            "Messages clarion gave up on: poison input, exhausted retries; with the reason.",
            writers=STAGES, readers=("dashboard", "cli"),
        ),
    ]  # fmt: skip
    named = {
        spec.name: replace(spec, topic=f"{s.topic_prefix}.{spec.name}", replication=s.replication_factor)
        for spec in specs
    }
    check_co_partitioned(named)
    return named
