"""Fanout: expand a started campaign into per-user executions, where the users live.

promo.expand is co-partitioned with the users table: a campaign arrives once per users
partition (agents/schedule.py), and each worker expands only the users it holds. The
agent records a cursor per campaign in the cursors table (beside the users); a step,
every `promo_tick_s`, reads the next `promo_expand_batch` users of each active cursor,
applies the audience and the per-user policy (agents/policy.py), writes the executions
to the promo lanes, waits for the broker to take them, and only then moves the cursor.
A crash or a rebalance resumes from the cursor: the users since it are expanded again,
with the same deterministic ids (campaign + user + channel + address), so the delivery
ledger answers the repeats and nothing is sent twice.

Backpressure: a step is skipped while the promo lanes' consumer lag is over
`promo_max_queued` executions, so a 1M-user campaign never floods the broker or the critical
lanes; `pacing_per_s` spreads a campaign over time. Pause and cancel come from
promo.controls before each step.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import faust
import msgspec
from aiokafka import TopicPartition

from clarion.agents.guard import Part, guarded
from clarion.agents.policy import decide, remember
from clarion.logs import event
from clarion.schemas.audiences import Predicate, compile_audience
from clarion.schemas.codec import decode, encode
from clarion.schemas.promo import Campaign, CampaignEvent, Cursor, ExpandCommand, ExpansionProgress
from clarion.schemas.records import DeliveryTask, TemplateVersion, UserProfile, scoped
from clarion.tables.status import new_notification_id
from clarion.tables.store import PartitionedStore
from clarion.tables.templates import resolve
from clarion.topology import faust_compat
from clarion.topology.catalog import lane_topic, retry_topic
from clarion.topology.outbox import Outbox
from clarion.topology.partitioning import partition_for
from clarion.topology.settings import promo_groups

if TYPE_CHECKING:
    from clarion.topology.topology import Topology

SOURCE = "promo.expand"
LANE = "promo"
log = logging.getLogger("clarion.fanout")
_cursor_decode = msgspec.json.Decoder(Cursor).decode
_recent_decode = msgspec.json.Decoder(dict[str, float]).decode
_json = msgspec.json.Encoder().encode


def execution_id(campaign_key: str, user_key: str, partition: int) -> str:
    """A campaign's notification id for one user: the same on every expansion, naming the user's partition."""
    digest = hashlib.blake2b(f"{campaign_key}\n{user_key}".encode(), digest_size=10).hexdigest()
    return new_notification_id(partition, digest)


class PromoLag:
    """Executions waiting on the promo lanes: records not yet consumed times executions per record, plus
    what this worker wrote since the broker was last asked (at most once a second).

    Lag is what the broker can tell (records), but a record holds hundreds of executions, and a
    step writes thousands between two readings: both are counted, so the bound holds in executions.
    """

    def __init__(self, topo: Topology) -> None:
        self.topo = topo
        self.records_behind = 0
        self.per_record = 1.0  # executions per lane record, as written here lately
        self.since_asked = 0
        self.asked = 0.0
        specs = topo.declared.specs
        self.tps = [
            TopicPartition(specs[name].topic, p)
            for name in specs
            if name.startswith(f"{LANE}.") and specs[name].value is DeliveryTask
            for p in range(specs[name].partitions)
        ]

    def wrote(self, records: int, executions: int) -> None:
        self.since_asked += executions
        if records:
            self.per_record = 0.7 * self.per_record + 0.3 * (executions / records)

    @property
    def executions(self) -> float:
        return self.records_behind * self.per_record + self.since_asked

    async def over(self, bound: int) -> bool:
        if time.monotonic() - self.asked >= 1.0:
            self.asked = time.monotonic()
            try:
                ends = await self.topo.resources.offsets.end_offsets(self.tps)
                committed: dict[TopicPartition, int] = {}
                for group in promo_groups(self.topo.declared.settings):  # `all` workers' group, or the promo workers'
                    for tp, offset in (await self.topo.resources.offsets.committed(group, self.tps)).items():
                        committed[tp] = max(offset, committed.get(tp, 0))
                self.records_behind = sum(max(0, end - committed.get(tp, 0)) for tp, end in ends.items())
                self.since_asked = 0
            except Exception as exc:  # the broker is away: keep the last answer
                event(log, "promo lag unavailable", logging.WARNING, exc=repr(exc))
        return self.executions > bound


def register(topo: Topology) -> None:
    settings = topo.declared.settings
    cursors = topo.emit.writer(topo.declared.cursors)
    frequency = topo.emit.writer(topo.declared.frequency)
    users = PartitionedStore(topo.declared.users)
    active: dict[int, set[str]] = {}  # users partition -> campaigns being expanded there
    indexed: set[int] = set()
    lag = PromoLag(topo)
    paced: dict[tuple[int, str], float] = {}  # (partition, campaign) -> when its last step ran
    topic = topo.declared.specs[SOURCE].topic
    cap = settings.frequency_cap()

    def cursor_of(partition: int, key: str) -> Cursor | None:
        raw = cursors.get(partition, key.encode())
        return _cursor_decode(raw) if raw else None

    async def handle(parts: Sequence[Part[ExpandCommand]], out: Outbox) -> None:
        for part in parts:
            for command in part.items:
                key = command.campaign.key
                held = cursor_of(part.partition, key)
                if held is None:  # a repeated command changes nothing
                    cursor = Cursor(command=command, progress=ExpansionProgress(partition=part.partition))
                    cursors.set(part.partition, key.encode(), _json(cursor))
                elif command.sweep > held.command.sweep and not held.cancelled:  # again from the start
                    held.command, held.after, held.position, held.sweeping = command, "", 0, True
                    held.progress.done = False
                    cursors.set(part.partition, key.encode(), _json(held))
                active.setdefault(part.partition, set()).add(key)
        await cursors.flush()

    @topo.declared.app.agent(topo.declared.topics[SOURCE], name="clarion.promo.fanout")
    async def fanout(stream: faust.StreamT) -> None:
        """Take a started campaign's command for this users partition: its expansion starts at the next step."""
        await guarded(topo, SOURCE, stream, ExpandCommand, handle)

    def owned() -> set[int]:
        return faust_compat.owned_partitions(topo.declared.app, topic)

    def index(partition: int) -> None:
        indexed.add(partition)
        for raw_key in cursors.store.keys(partition):
            cursor = cursor_of(partition, raw_key.decode())
            if cursor is not None and not cursor.progress.done:
                active.setdefault(partition, set()).add(raw_key.decode())

    async def step() -> None:
        mine = owned()
        for gone in indexed - mine:
            indexed.discard(gone)
            active.pop(gone, None)
        if not faust_compat.recovered(topo.declared.app):
            return
        for partition in mine - indexed:
            index(partition)
        work = [(p, key) for p in sorted(active) if p in mine for key in sorted(active[p])]
        if not work or await lag.over(settings.promo_max_queued):
            return
        await topo.resources.templates.ready.wait()
        out = topo.emit.outbox()
        changed: list[tuple[int, str, Cursor]] = []
        for partition, key in work:
            cursor = cursor_of(partition, key)
            if cursor is None or cursor.progress.done:
                active.get(partition, set()).discard(key)
                continue
            state = topo.resources.controls.get(key)
            if state == "paused":
                continue
            if state == "cancelled":
                cursor.progress.done, cursor.cancelled = True, True
            else:
                budget = _budget(cursor, partition, key)
                if budget == 0:
                    continue
                # the users written before the campaign started are in its audience: folded first
                await topo.resources.users_progress.caught_up(partition, cursor.command.started_at)
                expand(partition, cursor, budget, out)
                await asyncio.sleep(0)  # a partition's batch at a time: critical work in between
            changed.append((partition, key, cursor))
        if not changed:
            return
        lanes = [items for (name, _), (_, items) in out.groups.items() if name.startswith(f"{LANE}.")]
        lag.wrote(len(lanes), sum(len(items) for items in lanes))
        await out.flush()
        await topo.declared.app.producer.flush()  # the executions are the broker's before the cursor moves past them
        for partition, key, cursor in changed:
            cursors.set(partition, key.encode(), _json(cursor))
            now = topo.resources.clock()
            report = CampaignEvent(kind="progress", campaign_key=key, progress=cursor.progress, ts=now)
            out.add("promo.jobs", key, encode(report))
            if cursor.progress.done:
                active.get(partition, set()).discard(key)
                event(log, "campaign partition expanded", campaign=key, partition=partition,
                      targeted=cursor.progress.targeted, executions=cursor.progress.executions,
                      cancelled=cursor.cancelled)  # fmt: skip
        await cursors.flush()
        await frequency.flush()
        await out.flush()

    def _budget(cursor: Cursor, partition: int, key: str) -> int:
        """How many users this step may expand: the batch, or what the campaign's pacing allows."""
        rate = cursor.command.campaign.pacing_per_s
        if rate <= 0:
            return settings.promo_expand_batch
        now = time.monotonic()
        last = paced.setdefault((partition, key), now - settings.promo_tick_s)
        allowed = int((now - last) * rate / settings.critical_partitions)
        if allowed > 0:
            paced[(partition, key)] = now
        return min(allowed, settings.promo_expand_batch)

    def expand(partition: int, cursor: Cursor, budget: int, out: Outbox) -> None:
        command = cursor.command
        campaign = command.campaign
        template = resolve(topo.resources.templates, campaign.client_id, campaign.template_id, command.template_version)
        matches = audience_of(campaign)
        now = topo.resources.clock()
        counted = cursor.progress
        if cursor.sweeping:  # a sweep re-sends what was expanded before: the totals stay as they were
            cursor.progress = msgspec.structs.replace(counted, skipped=dict(counted.skipped))
        try:
            _expand_users(partition, cursor, template, matches, budget, now, out)
        finally:
            if cursor.sweeping:
                counted.done, cursor.progress = cursor.progress.done, counted
                cursor.sweeping = not counted.done

    def _expand_users(partition: int, cursor: Cursor, template: TemplateVersion | None, matches: Predicate,
                      budget: int, now: float, out: Outbox) -> None:  # fmt: skip
        progress = cursor.progress
        for raw in _next_users(partition, cursor, budget):
            user = decode(UserProfile, raw)
            if not matches(user):
                continue
            progress.targeted += 1
            if template is None:  # its version vanished from the templates topic (it never does; compaction keeps it)
                _skip(progress, "unknown_template")
                continue
            executions = _execute(partition, user, cursor, template, now, out)
            progress.executions += executions

    def _next_users(partition: int, cursor: Cursor, budget: int) -> list[bytes]:
        """The next users' records of the audience's range, moving the cursor past them."""
        campaign = cursor.command.campaign
        ids = campaign.audience.user_ids
        if ids is not None:  # an explicit list: only the ids that live on this partition
            found = []
            while cursor.position < len(ids) and len(found) < budget:
                user_key = scoped(campaign.client_id, ids[cursor.position])
                cursor.position += 1
                if partition_for(user_key, settings.critical_partitions) == partition:
                    raw = users.get(partition, user_key.encode())
                    if raw is not None:
                        found.append(raw)
                    else:
                        cursor.progress.targeted += 1
                        _skip(cursor.progress, "unknown_user")
            cursor.progress.done = cursor.position >= len(ids)
            return found
        prefix = scoped(campaign.client_id, "").encode()
        batch = users.scan(partition, prefix, cursor.after.encode(), budget)
        if batch:
            cursor.after = batch[-1][0].decode()
        cursor.progress.done = len(batch) < budget
        return [raw for _, raw in batch]

    def _execute(partition: int, user: UserProfile, cursor: Cursor, template: TemplateVersion, now: float,
                 out: Outbox) -> int:  # fmt: skip
        campaign = cursor.command.campaign
        user_key = user.user_key.encode()
        recent = _recent_decode(raw) if (raw := frequency.get(partition, user_key)) else {}
        suppressed = topo.resources.suppressions.of(partition, user.user_key)
        decision = decide(user, campaign, template, now, suppressed, recent, cap)
        if decision.skip is not None:
            _skip(cursor.progress, decision.skip)
            return 0
        if cap is not None:
            sends_at = decision.not_before or now
            frequency.set(partition, user_key, _json(remember(recent, campaign.key, sends_at, cap[1], now)))
        nid = execution_id(campaign.key, user.user_key, partition)
        params = {**campaign.params, "user": {"user_id": user.user_id, **user.attributes}}
        for index, address in enumerate(decision.addresses):
            task = DeliveryTask(
                delivery_id=f"{nid}.{decision.channel}.{index}",
                notification_id=nid,
                client_id=campaign.client_id,
                user_id=user.user_id,
                channel=decision.channel,  # type: ignore[arg-type]
                lane=LANE,
                address=address,
                template_id=template.template_id,
                template_version=template.version,
                params=params,
                locale=user.locale,
                not_before=decision.not_before,
                trace_id=campaign.trace_id,
                accepted_at=now,
                campaign=campaign.key,
            )
            if decision.not_before:  # deferred: straight to the schedule that holds it until due
                delay = settings.retry_bucket(decision.not_before - now)
                out.add(retry_topic(LANE, delay), task.user_key, encode(task))
            else:
                out.add(lane_topic(LANE, task.channel), task.user_key, encode(task))
        if decision.not_before:
            cursor.progress.deferred += 1
        return len(decision.addresses)

    compiled: dict[str, Predicate] = {}

    def audience_of(campaign: Campaign) -> Predicate:
        if campaign.key not in compiled:
            compiled[campaign.key] = compile_audience(campaign.audience, campaign.client_id)
        return compiled[campaign.key]

    @topo.declared.app.task
    async def expand_steps() -> None:
        """One expansion step every `promo_tick_s` (a step can take longer than a tick: no overlap)."""
        while True:
            try:
                await step()
            except Exception:  # a step that failed is taken again from the same cursors
                log.exception("expansion step failed")
            await asyncio.sleep(settings.promo_tick_s)


def _skip(progress: ExpansionProgress, reason: str) -> None:
    progress.skipped[reason] = progress.skipped.get(reason, 0) + 1
