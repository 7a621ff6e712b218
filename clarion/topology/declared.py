"""What a worker declares to faust: the catalog's topics, its tables and the lanes."""

from __future__ import annotations

from typing import Any

import faust

from clarion.topology.catalog import Lane, TopicSpec, catalog, lanes
from clarion.topology.settings import Settings, check_lanes


class Declared:
    """The catalog's topics (by logical name), the tables and the lanes, declared on `app`."""

    def __init__(self, app: faust.App, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.specs: dict[str, TopicSpec] = catalog(settings)
        self.lanes: list[Lane] = lanes(settings)
        self.topics: dict[str, faust.TopicT] = {
            name: app.topic(
                spec.topic,
                partitions=spec.partitions,
                key_serializer="raw",
                value_serializer="raw",
                internal=True,  # lets faust create it (with partitions and policy) before subscribing
                compacting=spec.compacted or None,
            )
            for name, spec in self.specs.items()
        }
        # Raw keys and values: table routing hashes the changelog key, which must match the
        # source topic's; values are clarion's own JSON, written through ChangelogWriter.
        # A promo-lanes worker (`--lanes promo`) holds no tables: they are None (agents/__init__.py).
        self.holds_tables = check_lanes(settings) != "promo"
        new_table: Any = app.Table if self.holds_tables else _no_table
        table = {"key_type": bytes, "value_type": bytes}
        self.idempotency = new_table("idempotency", partitions=settings.critical_partitions, **table)
        self.users = new_table("users", partitions=settings.critical_partitions, **table)
        # Status lives with the user's requests and lanes, so each stage folds its own outcomes.
        self.status = new_table("status", partitions=settings.critical_partitions, **table)
        self.suppressed = new_table("suppressed", partitions=settings.critical_partitions, **table)
        # Campaigns: the jobs on promo.jobs' partitions (their owner drives them); each users
        # partition's expansion cursor and each user's recent campaigns (frequency cap) beside the users.
        self.campaigns = new_table("campaigns", partitions=settings.promo_partitions, **table)
        self.cursors = new_table("cursors", partitions=settings.critical_partitions, **table)
        self.frequency = new_table("frequency", partitions=settings.critical_partitions, **table)


def _no_table(name: str, **kwargs: Any) -> None:
    """What a worker without tables has in their place."""
    return None
