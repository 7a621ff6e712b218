"""Each campaign's state as every worker sees it: promo.controls, tailed into memory.

The worker that owns a campaign's job publishes its state here; expansion (on the
users' workers) and the promo lanes (on theirs) read it before each step or batch, so a
pause or cancel reaches every worker within a poll, with no table routing.
"""

from __future__ import annotations

from clarion.schemas.promo import CampaignControl
from clarion.tables.mirror import TopicMirror


class CampaignControls(TopicMirror[CampaignControl]):
    """client/campaign_id -> its state (scheduled, expanding, sending, paused, cancelled, done)."""

    model = CampaignControl
    fetch_wait_ms = 100

    def add(self, control: CampaignControl, offset: int | None = None) -> None:
        self[control.campaign_key] = control.state
