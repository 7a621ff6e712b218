"""The Topology object: what a worker declares, the resources its agents use, and how they write.

Built by `wire()` (topology/wiring.py), which the worker (`clarion.app`) and the tests call;
each agent's `register(topo)` takes what it needs from the three parts.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import faust

from clarion.topology.declared import Declared
from clarion.topology.emitters import Emitters
from clarion.topology.resources import Resources
from clarion.topology.settings import Settings


class Topology:
    """`declared` (topics, tables, lanes), `resources` (clients, ledger, views, clock), `emit` (writers)."""

    def __init__(self, app: faust.App, settings: Settings, clock: Callable[[], float] = time.time) -> None:
        self.declared = Declared(app, settings)
        self.emit = Emitters(app, self.declared.specs, self.declared.status, clock)
        self.resources = Resources(self.declared, self.emit, clock)
