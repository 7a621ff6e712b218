"""Users: fold the compacted users topic into the users table (co-partitioned with requests).

It also reports how far it has folded each partition, so the ingest stage can wait for
a user whose upsert was acknowledged before the request (tables/users_progress.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import faust

from clarion.agents.guard import Part, guarded
from clarion.schemas.channels import CHANNELS
from clarion.schemas.codec import decode, encode
from clarion.schemas.records import UserProfile
from clarion.tables.users import addresses_for
from clarion.topology.outbox import Outbox

if TYPE_CHECKING:
    from clarion.topology.topology import Topology

SOURCE = "users"


def addresses(user: UserProfile) -> set[tuple[str, str]]:
    return {(channel, address) for channel in CHANNELS for address in addresses_for(user, channel)}


def register(topo: Topology) -> None:
    writer = topo.resources.suppressions.users  # the one users writer: dead push tokens leave profiles through it too

    async def handle(parts: Sequence[Part[UserProfile]], out: Outbox) -> None:
        for part in parts:
            for user in part.items:
                before = writer.get(part.partition, user.key.encode())
                added = addresses(user) - (addresses(decode(UserProfile, before)) if before else set())
                if added:  # an address added anew is no longer suppressed (a new device, an opt-in)
                    topo.resources.suppressions.clear(part.partition, user.key, added)
                writer.set(part.partition, user.key.encode(), encode(user))
        await writer.flush()

    async def folded(events: Sequence[faust.EventT]) -> None:
        for ev in events:
            topo.resources.users_progress.folded(ev.message.partition, ev.message.offset + 1)

    @topo.declared.app.agent(topo.declared.topics[SOURCE], name="clarion.users.table")
    async def users_table(stream: faust.StreamT) -> None:
        """Fold user profiles into the users table, beside the requests and lanes of the same users."""
        await guarded(topo, SOURCE, stream, UserProfile, handle, after=folded)
