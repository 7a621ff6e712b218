"""One stage per module; `register_all` puts the stages of the worker's lanes on a topology.

`clarion worker --lanes critical|promo|all` (setting `lanes`, CLARION_LANES) lets an
operator run the lanes in separate processes, so a campaign's sends never take CPU from
critical ones:

- `all` (the default): every stage, in the app's consumer group (`app_id`);
- `critical`: everything but the promo lanes, in the same group: users, dedupe + route,
  the critical deliver and retry agents, feedback, and the campaigns' schedule and fanout;
- `promo`: the promo deliver and retry agents only, in a consumer group of their own
  (`<app_id>-promo`), with no tables.

Why schedule and fanout stay with `critical`: fanout reads the users, suppression and
frequency tables, which are co-partitioned with the users topic (24 partitions), and
promo.expand is too; the tables' partitions live on the worker that consumes the users
topic's. Schedule is small (promo.jobs and its campaigns table). Neither sends anything.

Why the promo workers are a group of their own, with no tables: in one consumer group
faust's assignor (1) groups co-partitioned topics by the set of members subscribing to
them, so a process that declared the tables but consumed no users topic would be handed
the tables' changelog partitions apart from the users partitions they go with; and (2)
computes every member's table partitions from the leader's own tables, so a member
without them, elected leader, would hand out wrong ones. A group of their own avoids
both: its members consume only the promo lanes and retry tiers, and hold no state (their
executions were decided during expansion; suppressions found when sending go back to
the users' partitions on the feedback topic). Fanout's backpressure reads the promo lanes'
lag from both groups' committed offsets, whichever runs them.

Run `promo` workers beside `critical` ones, not beside `all`: an `all` worker already
consumes the promo lanes in the main group, so both groups would take each execution
(the delivery ledger still sends it once, but its outcome would be told twice).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from clarion.topology.settings import check_lanes

if TYPE_CHECKING:
    from clarion.topology.topology import Topology


def register_all(topo: Topology) -> None:
    from clarion.agents import dedupe, deliver, fanout, feedback, retry, schedule, users

    lanes = check_lanes(topo.declared.settings)
    only = None if lanes == "all" else [lanes]
    if lanes != "promo":
        users.register(topo)
        dedupe.register(topo)
    deliver.register(topo, only=only)
    retry.register(topo, only=only)
    if lanes != "promo":
        for stage in (feedback, schedule, fanout):
            stage.register(topo)
