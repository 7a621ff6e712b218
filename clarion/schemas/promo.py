"""Promotional campaigns: what POST /promo accepts and what the scheduler and fanout exchange.

A campaign's life: `create` on promo.jobs -> the campaigns table (state `scheduled`) ->
at `send_at` the owner of its partition sends one ExpandCommand per users partition
(`expanding`) -> each partition's expansion reports its totals back on promo.jobs as
`progress` -> every partition done (`sending`) -> every execution settled (`done`).
`pause`, `resume` and `cancel` arrive on promo.jobs too; the campaign's state is
published on promo.controls, which every worker tails, so expansion and the promo
lanes act on it within a poll.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from clarion.schemas.audiences import Audience
from clarion.schemas.channels import Channel
from clarion.schemas.records import _Record, scoped

CampaignState = Literal["scheduled", "expanding", "sending", "paused", "cancelled", "done"]
TERMINAL = ("cancelled", "done")


class SendWindow(msgspec.Struct, kw_only=True):
    """Hours of the user's local day the campaign may be sent in ("HH:MM"; may wrap midnight)."""

    start: str
    end: str


class Campaign(_Record, kw_only=True):
    """A campaign as the client asked for it (validated by the API)."""

    client_id: str
    campaign_id: str
    template_id: str
    template_version: int | None = None  # None: the latest version when the campaign starts
    channels: list[Channel]  # in preference order: each user gets the first one they can receive
    audience: Audience
    params: dict[str, Any] = {}
    send_at: float = 0.0  # epoch seconds; 0: now
    window: SendWindow | None = None
    pacing_per_s: float = 0.0  # executions per second over the whole campaign; 0: as fast as the lanes take
    created_at: float = 0.0
    trace_id: str = ""

    @property
    def key(self) -> str:
        return scoped(self.client_id, self.campaign_id)


class ExpansionProgress(msgspec.Struct, kw_only=True):
    """One users partition's totals for a campaign (absolute, so a repeated report changes nothing)."""

    partition: int
    targeted: int = 0  # users of the audience seen
    executions: int = 0  # delivery tasks written to the promo lanes
    deferred: int = 0  # of those, held for quiet hours or the send window
    skipped: dict[str, int] = {}  # policy reason -> users
    done: bool = False


class CampaignEvent(_Record, kw_only=True):
    """A command or a progress report for one campaign (topic: promo.jobs, key client/campaign_id)."""

    kind: Literal["create", "pause", "resume", "cancel", "progress"]
    campaign_key: str
    campaign: Campaign | None = None  # create
    progress: ExpansionProgress | None = None  # progress
    ts: float = 0.0


class ExpandCommand(_Record, kw_only=True):
    """Expand `campaign` over the users of the partition this record is on (topic: promo.expand)."""

    campaign: Campaign
    template_version: int  # resolved when the campaign started: every user gets the same version
    started_at: float
    sweep: int = 0  # > the cursor's: expand again from the start, counting nothing (agents/schedule.py)


class CampaignControl(_Record, kw_only=True):
    """A campaign's state as every worker sees it (topic: promo.controls, compacted)."""

    campaign_key: str
    state: CampaignState
    ts: float = 0.0


class Job(msgspec.Struct, kw_only=True):
    """A campaign in the campaigns table: the request, its state and each partition's expansion."""

    campaign: Campaign
    state: CampaignState = "scheduled"
    paused_from: CampaignState | None = None
    template_version: int | None = None
    started_at: float = 0.0
    finished_at: float = 0.0
    updated_at: float = 0.0
    progress: dict[int, ExpansionProgress] = {}
    sweeps: int = 0


class Cursor(msgspec.Struct, kw_only=True):
    """Where one partition's expansion of a campaign is (cursors table, on that users partition)."""

    command: ExpandCommand
    after: str = ""  # the last users-table key expanded (audiences over all users, or a predicate)
    position: int = 0  # the next index into audience.user_ids (explicit lists)
    progress: ExpansionProgress
    cancelled: bool = False
    sweeping: bool = False  # expanding again: executions re-sent (the ledger answers the settled), not counted
