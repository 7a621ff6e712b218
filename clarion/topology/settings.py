"""Settings read from CLARION_* environment variables (see the README's table)."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from typing import Any


@dataclass(frozen=True)
class Settings:
    """Every knob clarion reads; `Settings.from_env()` is the only constructor used in code."""

    app_id: str = "clarion"
    topic_prefix: str = "clarion"
    kafka: str = ""  # empty: `clarion dev` starts the embedded Tansu broker
    redis: str = ""  # empty: no Redis; the delivery ledger is process-local
    critical_partitions: int = 24
    promo_partitions: int = 8
    outcome_partitions: int = 24
    replication_factor: int = 1  # replicas of every topic clarion and faust create (3 on a production cluster)
    data_dir: str = "./var/data"
    web_host: str = "127.0.0.1"
    web_port: int = 6066  # the worker's faust web (status pages)
    canonical_url: str = ""  # how other workers reach this one; default from web_host/hostname
    api_host: str = "127.0.0.1"
    api_port: int = 8080
    status_url: str = ""  # where the API finds a worker's status pages; default: this worker
    access_log: int = 1  # the API logs one JSON line per request at INFO; 0: none
    max_request_bytes: int = 64 * 1024
    max_batch_request_bytes: int = 4 * 1024 * 1024  # POST /notif/batch
    max_batch_items: int = 1000
    max_template_versions: int = 1000  # versions one template may have
    max_templates: int = 10_000  # templates one client may have
    dedupe_window_s: float = 24 * 3600.0
    dedupe_prune_interval_s: float = 600.0  # also how often expired statuses are deleted
    status_retention_s: float = 7 * 24 * 3600.0  # a notification's status, after its last change
    retry_base_delay_s: float = 5.0
    retry_max_delay_s: float = 300.0
    max_attempts: int = 4
    stage_batch_records: int = 500  # most records a stage takes from its stream at once
    stage_batch_wait_ms: float = 5.0  # how long a busy stage keeps a batch open (agents/guard.py)
    deliver_concurrency: int = 8  # actors per critical deliver agent, each handling what it took
    promo_concurrency: int = 4  # actors per promo deliver agent
    promo_expand_batch: int = 1000  # users one expansion step reads from a partition
    promo_max_queued: int = 20_000  # executions waiting on the promo lanes above which expansion waits
    promo_batch_records: int = 8  # records a promo deliver actor takes at once (each holds hundreds of executions)
    promo_frequency_cap: str = ""  # "N/seconds": at most N campaigns per user per window (e.g. "3/86400"); empty: none
    promo_sweep_after_s: float = 30.0  # a campaign's settled count stuck this long below its due executions: sweep
    promo_tick_s: float = 0.1  # how often the scheduler looks for due campaigns and expansion takes a step
    preview_max_users: int = 200_000  # users one POST /audiences/preview reads at most; more: "complete": false
    lanes: str = "all"  # `clarion worker --lanes`: one of LANE_CHOICES (agents/__init__.py says why)
    provider_concurrency: int = 64  # provider calls in flight per lane and channel (~ rate x provider latency)
    provider_timeout_s: float = 10.0
    provider_rates: str = ""  # fleet-wide sends per second per channel, e.g. "sms=100,email=14/28" (rate/burst)
    provider_rate_reserve: float = 0.2  # share of each account's rate bucket (burst) only critical sends may take
    circuit_failures: int = 20  # transient failures in a row that open a channel's circuit
    circuit_open_s: float = 5.0  # how long an open circuit holds the channel's messages
    provider_auth_hold_s: float = 30.0  # no calls to a provider that refused our credentials, for this long
    sender: str = "process"  # "process": provider calls in a sender process (with Redis); "inline": in the worker
    session_timeout_s: float = 60.0
    heartbeat_interval_s: float = 3.0
    producer_max_batch_bytes: int = 16384
    producer_linger_ms: int = 1  # how long the worker's producer waits to fill a produce request
    fetch_max_wait_ms: int = 500  # faust hard-codes 1500; topology/fetching.py
    fetch_idle_wait_ms: int = 500  # used after fetch_idle_after_s without records
    fetch_idle_after_s: float = 2.0
    broker_quirks: str = ""  # "tansu": work around the embedded broker's quirks (topology/tansu.py)
    apns_url: str = "https://api.push.apple.com"
    apns_topic: str = "com.example.app"
    apns_bearer: str = ""  # a static provider token, used when no key file is set
    apns_key_file: str = ""  # the team's .p8 key: ES256 provider tokens minted from it, re-minted every 50 min
    apns_key_id: str = ""  # the key's id (the JWT's kid)
    apns_team_id: str = ""  # the Apple developer team id (the JWT's iss)
    fcm_url: str = "https://fcm.googleapis.com"
    fcm_project: str = "clarion-dev"  # left at this default, a service-account file's project_id is used
    fcm_bearer: str = ""  # a static OAuth2 access token, used when no service-account file is set
    fcm_service_account_file: str = ""  # JSON key: access tokens minted (google-auth) and refreshed before expiry
    ses_url: str = "https://email.us-east-1.amazonaws.com"
    ses_region: str = "us-east-1"
    ses_access_key: str = ""
    ses_secret_key: str = ""
    ses_session_token: str = ""  # with temporary static keys (signed as x-amz-security-token)
    ses_credentials: str = "static"  # "static": the keys above; "chain": botocore's chain (env, files, roles)
    ses_from: str = "notifications@example.com"
    ses_configuration_set: str = ""  # sent with each email: SES publishes its events (with the tags) to SNS
    # Failover: a second SES endpoint (another region), signed with the same credentials source.
    # Empty URL: no fallback. Empty region: ses_region (a second endpoint in the same region).
    ses_fallback_url: str = ""
    ses_fallback_region: str = ""
    twilio_url: str = "https://api.twilio.com"
    twilio_account_sid: str = "AC00000000000000000000000000000000"
    twilio_auth_token: str = ""
    twilio_from: str = "+15550000000"
    twilio_messaging_service_sid: str = ""  # MG…: when set, sent as MessagingServiceSid instead of From
    # Failover: a second Twilio account (its own SID, token and number). Empty SID: no fallback.
    twilio_fallback_account_sid: str = ""
    twilio_fallback_auth_token: str = ""
    twilio_fallback_from: str = ""
    twilio_status_callback: str = ""  # empty: derived from webhook_base_url (status_callback_url)
    # Twilio Webhooks SharedKeys (Webhook Settings, public beta): "<key id>=<secret>[,…]". A callback whose
    # X-Twilio-Webhooks-Signature-Settings names one of these keys is checked with its secret and algorithm.
    twilio_webhook_shared_keys: str = ""
    # The public URL of the API's root as providers reach it (e.g. https://hooks.example.com): Twilio
    # signs the URL it calls, so the webhooks check signatures against this, not what the proxy forwards.
    webhook_base_url: str = ""
    sns_topic_arns: str = ""  # comma-separated SNS topics whose messages /webhooks/ses takes; empty: none
    # Where SNS signing certificates (and SubscribeURLs) may be fetched from: scheme://host[:port], full match
    sns_host_pattern: str = r"https://sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?"

    @classmethod
    def from_env(cls, **overrides: Any) -> Settings:
        """Build settings from CLARION_<FIELD> variables; keyword overrides win."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            name = "CLARION_" + f.name.upper()
            if name not in os.environ:
                continue
            raw = os.environ[name]
            if f.type in ("int", int):
                values[f.name] = int(raw)
            elif f.type in ("float", float):
                values[f.name] = float(raw)
            else:
                values[f.name] = raw
        values.update(overrides)
        return cls(**values)

    @property
    def status_callback_url(self) -> str:
        """Twilio's StatusCallback: the configured one, else /webhooks/twilio under webhook_base_url."""
        if self.twilio_status_callback or not self.webhook_base_url:
            return self.twilio_status_callback
        return self.webhook_base_url.rstrip("/") + "/webhooks/twilio"

    @property
    def broker_url(self) -> str:
        """faust broker URL; `kafka` accepts `host:port[,host:port]` or `kafka://...`."""
        if not self.kafka:
            raise RuntimeError("CLARION_KAFKA is not set; run `clarion dev` for the embedded broker")
        return self.kafka if "://" in self.kafka else "kafka://" + self.kafka

    @property
    def bootstrap_servers(self) -> str:
        """Bootstrap list for plain aiokafka clients."""
        return self.broker_url.split("://", 1)[1].replace(";", ",")

    def frequency_cap(self) -> tuple[int, float] | None:
        """(N, window seconds) from promo_frequency_cap, or None when there is no cap."""
        if not self.promo_frequency_cap:
            return None
        count, _, window = self.promo_frequency_cap.partition("/")
        return int(count), float(window)

    def retry_delay(self, attempt: int) -> float:
        """Backoff before attempt `attempt + 1`: base * 2**(attempt-1), capped."""
        return min(self.retry_base_delay_s * 2 ** (attempt - 1), self.retry_max_delay_s)

    def retry_delays(self) -> list[float]:
        """The retry topics' delays: doubling from the base up to the cap (which is one of them)."""
        delays = []
        delay = self.retry_base_delay_s
        while delay < self.retry_max_delay_s:
            delays.append(delay)
            delay *= 2
        return [*delays, self.retry_max_delay_s]

    def retry_bucket(self, wait_s: float) -> float:
        """The shortest retry delay that is at least `wait_s` (the cap when none is)."""
        return next((d for d in self.retry_delays() if d >= wait_s), self.retry_max_delay_s)


LANE_CHOICES = ("all", "critical", "promo")


def check_lanes(settings: Settings) -> str:
    """The worker's `lanes`, or a ValueError naming the choices."""
    if settings.lanes not in LANE_CHOICES:
        raise ValueError(f"CLARION_LANES is {settings.lanes!r}: one of {', '.join(LANE_CHOICES)}")
    return settings.lanes


def group_id(settings: Settings) -> str:
    """The faust app id (so the consumer group) of a worker running `settings.lanes`."""
    return f"{settings.app_id}-promo" if check_lanes(settings) == "promo" else settings.app_id


def promo_groups(settings: Settings) -> list[str]:
    """The consumer groups that may consume the promo lanes: the main one (`all`), the promo workers'."""
    return [settings.app_id, f"{settings.app_id}-promo"]
