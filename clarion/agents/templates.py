"""Templates: fold template versions into the global table every worker holds."""

from __future__ import annotations

from typing import TYPE_CHECKING

import faust

from clarion.agents.guard import guarded
from clarion.schemas.records import TemplateVersion
from clarion.tables.templates import latest_key

if TYPE_CHECKING:
    from clarion.topology.topology import Topology

SOURCE = "templates"


def register(topo: Topology) -> None:
    async def handle(template: TemplateVersion, ev: faust.EventT) -> None:
        topo.templates[template.key] = template.asdict()
        latest = latest_key(template.template_id)
        if template.version > (topo.templates.get(latest) or 0):
            topo.templates[latest] = template.version

    @topo.app.agent(topo.topics[SOURCE], name="clarion.templates.table")
    async def templates_table(stream: faust.StreamT) -> None:
        await guarded(topo, SOURCE, stream, TemplateVersion, handle)
