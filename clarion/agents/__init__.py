"""One stage per module; `register_all` puts every stage's agents on a topology."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from clarion.topology.topology import Topology


def register_all(topo: Topology) -> None:
    from clarion.agents import dedupe, deliver, fanout, feedback, retry, schedule, users

    for stage in (users, dedupe, deliver, retry, feedback, schedule, fanout):
        stage.register(topo)
