"""Schedule: campaigns' jobs, driven by the worker that owns their partition of promo.jobs.

Kafka's partition assignment is the lease: the campaigns table is co-partitioned with
promo.jobs, so exactly one worker holds a job and hears its commands, and a rebalance
hands both to the next owner, which rebuilds its index of due jobs from the table.
Due jobs are kept in a heap by `send_at` (built once per assigned partition), so each
tick looks only at the head. Starting a job sends one ExpandCommand per users partition
(agents/fanout.py); the partitions report their totals back here as `progress`; a job
whose partitions are all done and whose executions are all settled (the ledger's
campaign counters) is `done`. Every state change is published on promo.controls.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import faust
import msgspec

from clarion.agents.guard import Part, guarded
from clarion.logs import event
from clarion.schemas.codec import encode
from clarion.schemas.promo import TERMINAL, CampaignControl, CampaignEvent, ExpandCommand, ExpansionProgress, Job
from clarion.tables.templates import resolve
from clarion.topology import faust_compat
from clarion.topology.outbox import Outbox

if TYPE_CHECKING:
    from clarion.topology.topology import Topology

SOURCE = "promo.jobs"
log = logging.getLogger("clarion.schedule")
_job_decode = msgspec.json.Decoder(Job).decode
_job_encode = msgspec.json.Encoder().encode


def settled_count(counts: dict[str, int]) -> int:
    return sum(counts.values())


class Jobs:
    """The campaigns table as the scheduler uses it, with the due heap and the active set per partition."""

    def __init__(self, topo: Topology) -> None:
        self.topo = topo
        self.writer = topo.emit.writer(topo.declared.campaigns)
        self.due: list[tuple[float, int, str]] = []  # (send_at, partition, campaign key)
        self.active: dict[int, set[str]] = {}  # partition -> keys of jobs expanding or sending
        self.indexed: set[int] = set()

    def get(self, partition: int, key: str) -> Job | None:
        raw = self.writer.get(partition, key.encode())
        return _job_decode(raw) if raw else None

    def put(self, partition: int, key: str, job: Job) -> None:
        job.updated_at = self.topo.resources.clock()
        self.writer.set(partition, key.encode(), _job_encode(job))
        if job.state in ("expanding", "sending"):
            self.active.setdefault(partition, set()).add(key)
        else:
            self.active.get(partition, set()).discard(key)

    def index(self, partition: int) -> None:
        """Read one newly held partition's jobs into the heap and the active set (once per assignment)."""
        self.indexed.add(partition)
        for raw_key in self.writer.store.keys(partition):
            key = raw_key.decode()
            job = self.get(partition, key)
            if job is None:
                continue
            if job.state == "scheduled":
                heapq.heappush(self.due, (job.campaign.send_at, partition, key))
            elif job.state in ("expanding", "sending"):
                self.active.setdefault(partition, set()).add(key)

    def forget(self, partitions: set[int]) -> None:
        self.indexed -= partitions
        self.due = [entry for entry in self.due if entry[1] not in partitions]
        heapq.heapify(self.due)
        for partition in partitions:
            self.active.pop(partition, None)


def register(topo: Topology) -> None:
    jobs = Jobs(topo)
    settings = topo.declared.settings
    topic = topo.declared.specs[SOURCE].topic
    topo.resources.jobs = jobs

    def publish(out: Outbox, key: str, job: Job) -> None:
        control = CampaignControl(campaign_key=key, state=job.state, ts=topo.resources.clock())
        out.add("promo.controls", key, encode(control))

    def apply(partition: int, item: CampaignEvent, out: Outbox) -> None:
        key = item.campaign_key
        job = jobs.get(partition, key)
        now = topo.resources.clock()
        if item.kind == "create":
            if job is not None or item.campaign is None:  # the campaign id is idempotent per client
                return
            job = Job(campaign=item.campaign)
            jobs.put(partition, key, job)
            heapq.heappush(jobs.due, (item.campaign.send_at, partition, key))
            publish(out, key, job)
            event(log, "campaign scheduled", client_id=item.campaign.client_id, campaign=key,
                  send_at=item.campaign.send_at)  # fmt: skip
            return
        if job is None or job.state in TERMINAL:
            return
        if item.kind == "progress" and item.progress is not None:
            _merge(job, item.progress)
            if _expanded(job, settings.critical_partitions):
                if job.state == "expanding":
                    job.state = "sending"
                elif job.state == "paused" and job.paused_from == "expanding":
                    job.paused_from = "sending"
            jobs.put(partition, key, job)
            if job.state == "sending":
                publish(out, key, job)
            return
        if item.kind == "pause" and job.state != "paused":
            job.paused_from, job.state = job.state, "paused"
        elif item.kind == "resume" and job.state == "paused":
            job.state, job.paused_from = job.paused_from or "scheduled", None
            if job.state == "scheduled":
                heapq.heappush(jobs.due, (job.campaign.send_at, partition, key))
        elif item.kind == "cancel":
            job.state, job.finished_at = "cancelled", now
        else:
            return
        jobs.put(partition, key, job)
        publish(out, key, job)
        event(log, f"campaign {item.kind}", client_id=job.campaign.client_id, campaign=key, state=job.state)

    async def handle(parts: Sequence[Part[CampaignEvent]], out: Outbox) -> None:
        for part in parts:
            _index_if_new(part.partition)
            for item in part.items:
                apply(part.partition, item, out)
        await out.flush()
        await jobs.writer.flush()

    def _index_if_new(partition: int) -> None:
        if partition not in jobs.indexed:
            jobs.index(partition)

    def owned() -> set[int]:
        return faust_compat.owned_partitions(topo.declared.app, topic)

    async def start_due(out: Outbox) -> None:
        now = topo.resources.clock()
        mine = owned()
        for partition in mine - jobs.indexed:
            if faust_compat.recovered(topo.declared.app):
                jobs.index(partition)
        while jobs.due and jobs.due[0][0] <= now:
            _, partition, key = heapq.heappop(jobs.due)
            if partition not in mine:
                continue
            job = jobs.get(partition, key)
            if job is None or job.state != "scheduled":
                continue  # paused (resume pushes it again), cancelled, or started already
            start(partition, key, job, now, out)

    def start(partition: int, key: str, job: Job, now: float, out: Outbox) -> None:
        campaign = job.campaign
        templates = topo.resources.templates
        template = resolve(templates, campaign.client_id, campaign.template_id, campaign.template_version)
        if template is None:
            job.state, job.finished_at = "cancelled", now
            event(log, "campaign cancelled: unknown template", logging.WARNING, client_id=campaign.client_id,
                  campaign=key, template_id=campaign.template_id)  # fmt: skip
        else:
            job.state, job.started_at, job.template_version = "expanding", now, template.version
            command = encode(ExpandCommand(campaign=campaign, template_version=template.version, started_at=now))
            for users_partition in range(settings.critical_partitions):
                out.add("promo.expand", key, command, users_partition)
            event(log, "campaign started", client_id=campaign.client_id, campaign=key,
                  late_s=round(now - campaign.send_at, 3) if campaign.send_at else 0.0)  # fmt: skip
        jobs.put(partition, key, job)
        publish(out, key, job)

    async def finish_sent(out: Outbox) -> None:
        for partition, keys in list(jobs.active.items()):
            for key in list(keys):
                job = jobs.get(partition, key)
                if job is None or job.state != "sending":
                    continue
                counts = await topo.resources.ledger.campaign_counts(key)
                settled = settled_count(counts)
                due = sum(p.executions for p in job.progress.values())
                if settled >= due:
                    job.state, job.finished_at = "done", topo.resources.clock()
                    jobs.put(partition, key, job)
                    publish(out, key, job)
                    event(log, "campaign done", client_id=job.campaign.client_id, campaign=key, **counts)
                elif stalled(key, settled, due - sum(p.deferred for p in job.progress.values())):
                    sweep(partition, key, job, out, settled, due)

    stalls: dict[str, tuple[int, float]] = {}  # campaign -> (settled, since when)

    def stalled(key: str, settled: int, due_now: int) -> bool:
        """Settled stuck below what is due (deferred executions aside) for promo_sweep_after_s."""
        now = topo.resources.clock()
        held = stalls.get(key)
        if held is None or held[0] != settled or settled >= due_now:
            stalls[key] = (settled, now)
            return False
        return now - held[1] >= settings.promo_sweep_after_s

    def sweep(partition: int, key: str, job: Job, out: Outbox, settled: int, due: int) -> None:
        """Expand the campaign again from the start. An execution can be lost between fanout and its
        lane (faust dropped records after a crash: topology/gaps.py); the ids are the same, so the
        ledger answers every settled one and only the lost ones are sent."""
        job.sweeps += 1
        command = ExpandCommand(campaign=job.campaign, template_version=job.template_version or 0,
                                started_at=job.started_at, sweep=job.sweeps)  # fmt: skip
        for users_partition in range(settings.critical_partitions):
            out.add("promo.expand", key, encode(command), users_partition)
        jobs.put(partition, key, job)
        stalls[key] = (settled, topo.resources.clock())
        event(log, "campaign stalled below its executions: expanding it again", logging.WARNING,
              client_id=job.campaign.client_id, campaign=key, settled=settled, executions=due, sweep=job.sweeps)

    @topo.declared.app.agent(topo.declared.topics[SOURCE], name="clarion.promo.schedule")
    async def schedule(stream: faust.StreamT) -> None:
        """Fold campaign commands and expansion progress into the campaigns table (the job's owner only)."""
        await guarded(topo, SOURCE, stream, CampaignEvent, handle)

    ticks = 0

    @topo.declared.app.timer(settings.promo_tick_s, name="clarion.promo.start_due")
    async def tick() -> None:
        nonlocal ticks
        ticks += 1
        out = topo.emit.outbox()
        await start_due(out)
        if ticks % max(1, round(1.0 / settings.promo_tick_s)) == 0:  # about once a second
            await finish_sent(out)
        await out.flush()
        await jobs.writer.flush()

    @topo.declared.app.on_partitions_revoked.connect
    async def forget_jobs(app: faust.App, revoked: set[faust.types.TP], **kwargs: object) -> None:
        jobs.forget({tp.partition for tp in revoked if tp.topic == topic})


def _merge(job: Job, report: ExpansionProgress) -> None:
    """Totals are absolute and only grow: a late or repeated report never takes one back."""
    held = job.progress.get(report.partition)
    if held is None or (report.done, report.targeted) >= (held.done, held.targeted):
        job.progress[report.partition] = report


def _expanded(job: Job, partitions: int) -> bool:
    return len(job.progress) == partitions and all(p.done for p in job.progress.values())
