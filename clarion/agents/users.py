"""Users: fold the compacted users topic into the users table (co-partitioned with requests)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import faust

from clarion.agents.guard import guarded
from clarion.logs import event
from clarion.schemas.records import UserProfile

if TYPE_CHECKING:
    from clarion.topology.topology import Topology

SOURCE = "users"
log = logging.getLogger("clarion.users")


def register(topo: Topology) -> None:
    async def handle(user: UserProfile, ev: faust.EventT) -> None:
        topo.users[user.user_id] = user.asdict()
        event(log, "user profile stored", partition=ev.message.partition)

    @topo.app.agent(topo.topics[SOURCE], name="clarion.users.table")
    async def users_table(stream: faust.StreamT) -> None:
        await guarded(topo, SOURCE, stream, UserProfile, handle)
