"""Outcomes: fold every outcome into the status table, keyed by notification_id."""

from __future__ import annotations

from typing import TYPE_CHECKING

import faust

from clarion.agents.guard import guarded
from clarion.schemas.records import Outcome
from clarion.tables.status import fold

if TYPE_CHECKING:
    from clarion.topology.topology import Topology

SOURCE = "outcomes"


def register(topo: Topology) -> None:
    async def handle(outcome: Outcome, ev: faust.EventT) -> None:
        topo.status[outcome.notification_id] = fold(topo.status.get(outcome.notification_id), outcome)

    @topo.app.agent(topo.topics[SOURCE], name="clarion.outcomes.status")
    async def record_status(stream: faust.StreamT) -> None:
        await guarded(topo, SOURCE, stream, Outcome, handle)
