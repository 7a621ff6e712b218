"""The worker's /metrics page (Prometheus text format), behind an API key with the `metrics` scope.

The hot path only bumps plain counters it already kept (`topo.emit.counters`, `topo.emit.outcomes`:
one dict increment per outcome); they are turned into metric families when Prometheus
scrapes, with table sizes (RocksDB's key estimates) and what `scrape.ScrapeProbes` reads
from the broker and the campaigns table. Provider call latency and results are the one
histogram observed as things happen (providers/metrics.py, in the deliver stage).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from faust.web import Request, Response, View
from prometheus_client import ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from clarion.tables.api_keys import Caller
from clarion.tables.store import PartitionedStore
from clarion.web.scrape import ScrapeProbes
from clarion.web.status import authenticated

if TYPE_CHECKING:
    from clarion.topology.topology import Topology

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
TABLES = ("idempotency", "users", "status", "suppressed", "campaigns", "cursors", "frequency")
STAGE_COUNTS = {
    "takes": "Batches a stage took from its stream",
    "records": "Records a stage took",
    "items": "Items (notifications, tasks, ...) in the records a stage took",
    "forwarded": "Items a stage found on the wrong partition for their key and forwarded",
}


class TopologyCollector(Collector):
    """Metric families built at scrape time from the worker's counters, tables and probes."""

    def __init__(self, topo: Topology, probes: ScrapeProbes) -> None:
        self.topo = topo
        self.probes = probes

    def describe(self) -> Iterable[Metric]:
        return []  # nothing to check for clashes: the names are ours alone

    def collect(self) -> Iterator[Metric]:
        yield from self._counted()
        yield self._tables()
        yield from self._probed()

    def _counted(self) -> Iterator[Metric]:
        outcomes = CounterMetricFamily(
            "clarion_notifications", "Outcomes by lane, channel (none: the notification as a whole) and outcome",
            labels=["lane", "channel", "outcome"],
        )  # fmt: skip
        for (lane, channel, status), n in list(self.topo.emit.outcomes.items()):
            outcomes.add_metric([lane, channel, status], n)
        yield outcomes
        dead = CounterMetricFamily("clarion_dead_letters", "Messages sent to the DLQ, by source topic",
                                   labels=["source_topic"])  # fmt: skip
        stages = {kind: CounterMetricFamily(f"clarion_stage_{kind}", doc, labels=["stage"])
                  for kind, doc in STAGE_COUNTS.items()}  # fmt: skip
        feedback = CounterMetricFamily("clarion_feedback_dropped", "Provider feedback for unknown notifications",
                                       labels=["channel"])  # fmt: skip
        for key, n in list(self.topo.emit.counters.items()):
            if key[0] == "dead_letter":
                dead.add_metric([key[1]], n)
            elif key[0] == "stage" and key[2] in stages:
                stages[key[2]].add_metric([key[1]], n)
            elif key[0] == "feedback":
                feedback.add_metric([key[1]], n)
        yield dead
        yield from stages.values()
        yield feedback

    def _tables(self) -> Metric:
        sizes = GaugeMetricFamily("clarion_table_keys", "Keys in the table partitions this worker serves "
                                  "(RocksDB's estimate)", labels=["table"])  # fmt: skip
        for name in TABLES:
            table = getattr(self.topo.declared, name, None)
            if table is not None:  # a promo-lanes worker holds none
                sizes.add_metric([name], PartitionedStore(table).estimated_keys())
        return sizes

    def _probed(self) -> Iterator[Metric]:
        probes = self.probes
        lag = GaugeMetricFamily("clarion_consumer_lag", "Records not yet committed by this worker's group, "
                                "over the partitions it holds", labels=["topic"])  # fmt: skip
        for topic, n in sorted(probes.lag.items()):
            lag.add_metric([topic], n)
        yield lag
        states = GaugeMetricFamily("clarion_campaigns", "Campaigns whose job this worker holds, by state",
                                   labels=["state"])  # fmt: skip
        for state, n in sorted(probes.campaigns.items()):
            states.add_metric([state], n)
        yield states
        targeted = GaugeMetricFamily("clarion_campaign_targeted", "Users a running campaign's audience matched",
                                     labels=["campaign"])  # fmt: skip
        executions = GaugeMetricFamily("clarion_campaign_executions", "Deliveries a running campaign planned",
                                       labels=["campaign"])  # fmt: skip
        settled = GaugeMetricFamily("clarion_campaign_settled", "A running campaign's deliveries by final state "
                                    "(the ledger's)", labels=["campaign", "state"])  # fmt: skip
        for key, counts in sorted(probes.progress.items()):
            targeted.add_metric([key], counts["targeted"])
            executions.add_metric([key], counts["executions"])
            for state in ("sent", "failed", "dead", "cancelled"):
                settled.add_metric([key, state], counts[state])
        yield from (targeted, executions, settled)
        age = GaugeMetricFamily("clarion_metrics_probe_age_seconds", "Age of the lag and campaign figures")
        if probes.refreshed_at:
            age.add_metric([], time.monotonic() - probes.refreshed_at)
        yield age


def register_metrics_page(topo: Topology) -> ScrapeProbes:
    """GET /metrics on the worker's web port; the registry is the topology's own (one per worker)."""
    probes = ScrapeProbes(topo)
    ProcessCollector(registry=topo.resources.registry)
    topo.resources.registry.register(TopologyCollector(topo, probes))

    @topo.declared.app.page("/metrics", name="clarion.metrics")
    async def metrics(web: View, request: Request) -> Response:
        """Prometheus text format; needs an API key with the `metrics` scope."""
        caller = await authenticated(topo, web, request, "metrics")
        if not isinstance(caller, Caller):
            return caller
        await probes.refresh()
        return web.bytes(generate_latest(topo.resources.registry), headers={"Content-Type": CONTENT_TYPE})

    return probes
