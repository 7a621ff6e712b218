"""Worker page: POST /audiences/preview/, how many of a client's users an audience holds, and a few of them.

The users table is spread over the workers by partition (24 by default). The worker the
API asks spreads the question the same way: it counts over the users partitions it holds
and asks every other worker that holds some (faust's table metadata: host -> partitions)
to count over the ones named for it (`?local=1`), then adds the counts and merges the
samples. Counting is local: a scan of the client's key range (`client/`) of each partition
for `all` and `where`, one lookup per id on its partition for `user_ids`; the audience's
predicate is the one fanout uses, restricted to the caller's client.

The work is bounded: each partition reads at most `preview_max_users / partitions` users
(`scanned`); when one has more, the answer says `"complete": false` and the count is a
lower bound. The scan gives the event loop back between batches, so deliveries on the same
worker go on. Partitions no worker counted (a rebalance, a worker that did not answer)
make it a 503: a count is never silently short. The page asks for the API key like the
status pages (scope `read`); the API passes the caller's key on.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson
from faust.web import Request, Response, View

from clarion.logs import event
from clarion.schemas.audiences import Audience, ExpressionError, Predicate, audience_from_body, compile_audience
from clarion.schemas.codec import PoisonMessage, decode
from clarion.schemas.records import UserProfile, scoped
from clarion.schemas.validation import ValidationFailed
from clarion.tables.api_keys import Caller
from clarion.tables.store import PartitionedStore
from clarion.topology import faust_compat
from clarion.topology.partitioning import partition_for
from clarion.web.status import authenticated

if TYPE_CHECKING:
    from clarion.topology.topology import Topology

log = logging.getLogger("clarion.schemas.audiences")
SAMPLE = 10  # user ids in an answer's sample
BATCH = 1000  # users read between two yields to the event loop
ASK_TIMEOUT_S = 4.0  # for another worker's count: the API gives up on the whole after 5 s


@dataclass
class Tally:
    """What one or more partitions hold of an audience."""

    count: int = 0
    scanned: int = 0  # users (or ids) read
    complete: bool = True  # every user of the counted partitions was read
    sample: list[str] = field(default_factory=list)
    partitions: set[int] = field(default_factory=set)  # the partitions counted

    def add(self, other: Tally) -> None:
        self.count += other.count
        self.scanned += other.scanned
        self.complete = self.complete and other.complete
        self.sample = sorted({*self.sample, *other.sample})[:SAMPLE]
        self.partitions |= other.partitions

    def found(self, user: UserProfile) -> None:
        self.count += 1
        if len(self.sample) < SAMPLE:
            self.sample.append(user.user_id)

    def body(self) -> dict[str, Any]:
        return {"count": self.count, "sample": sorted(self.sample)[:SAMPLE], "scanned": self.scanned,
                "complete": self.complete, "partitions": sorted(self.partitions)}  # fmt: skip

    @classmethod
    def of(cls, body: Any) -> Tally:
        """A Tally from another worker's answer (ValueError when it is not one)."""
        try:
            sample, partitions = [str(s) for s in body["sample"]], {int(p) for p in body["partitions"]}
            return cls(int(body["count"]), int(body["scanned"]), bool(body["complete"]), sample, partitions)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a preview answer: {exc!r}") from None


async def count_local(topo: Topology, audience: Audience, client_id: str, partitions: Iterable[int]) -> Tally:
    """`audience`'s users among this worker's `partitions` of the users table."""
    store = PartitionedStore(topo.declared.users)
    matches = compile_audience(audience, client_id)
    n = topo.declared.settings.critical_partitions
    budget = max(1, math.ceil(topo.declared.settings.preview_max_users / n))
    tally = Tally()
    ids_by_partition: dict[int, list[str]] = {}
    for user_id in audience.user_ids or ():
        ids_by_partition.setdefault(partition_for(scoped(client_id, user_id), n), []).append(user_id)
    for partition in sorted(partitions):
        part = Tally(partitions={partition})  # its sample: its first users in key order
        if audience.user_ids is not None:
            _lookup(store, partition, client_id, sorted(ids_by_partition.get(partition, [])), matches, part)
        else:
            await _scan(store, partition, scoped(client_id, "").encode(), budget, matches, part)
        tally.add(part)
    return tally


def _lookup(store: PartitionedStore, partition: int, client_id: str, ids: list[str], matches: Predicate,
            tally: Tally) -> None:  # fmt: skip
    for user_id in ids:
        tally.scanned += 1
        user = _user(store.get(partition, scoped(client_id, user_id).encode()))
        if user is not None and matches(user):
            tally.found(user)


async def _scan(store: PartitionedStore, partition: int, prefix: bytes, budget: int, matches: Predicate,
                tally: Tally) -> None:  # fmt: skip
    after, read = b"", 0
    while read < budget:
        want = min(BATCH, budget - read)
        batch = store.scan(partition, prefix, after, want)
        read += len(batch)
        for _, raw in batch:
            user = _user(raw)
            if user is not None and matches(user):
                tally.found(user)
        if len(batch) < want:
            break
        after = batch[-1][0]
        await asyncio.sleep(0)  # deliveries on this worker go on between batches
    else:  # the budget is spent: complete only if nothing is left
        tally.complete = tally.complete and not store.scan(partition, prefix, after, 1)
    tally.scanned += read


def _user(raw: bytes | None) -> UserProfile | None:
    if raw is None:
        return None
    try:
        return decode(UserProfile, raw)
    except PoisonMessage:  # the users agent validated it on the way in; an old record may differ
        return None


def held(topo: Topology) -> dict[str, set[int]]:
    """Each worker's URL -> the users partitions it holds (faust's table metadata)."""
    changelog = topo.declared.users.changelog_topic.get_topic_name()
    return {
        url.rstrip("/"): set(topics.get(changelog, ()))
        for url, topics in topo.declared.app.router.table_metadata(topo.declared.users.name).items()
    }


def mine(topo: Topology) -> set[int]:
    """The users partitions this worker holds and has read back: none while its tables recover."""
    if not faust_compat.recovered(topo.declared.app):
        return set()
    return held(topo).get(str(topo.declared.app.conf.canonical_url).rstrip("/"), set())


def _error(web: View, status: int, field: str, error: str) -> Response:
    return web.json({"error": error, "errors": [{"field": field, "error": error}]}, status=status)


def register_audience_pages(topo: Topology) -> None:
    app = topo.declared.app

    async def ask(url: str, partitions: set[int], audience: Any, authorization: str) -> Tally:
        body = {"audience": audience, "partitions": sorted(partitions)}
        timeout = aiohttp.ClientTimeout(total=ASK_TIMEOUT_S)
        async with app.http_client.post(f"{url}/audiences/preview/?local=1", json=body, timeout=timeout,
                                        headers={"Authorization": authorization}) as resp:  # fmt: skip
            if resp.status != 200:
                raise ValueError(f"answered {resp.status}")
            return Tally.of(await resp.json())

    async def everywhere(audience: Audience, raw_audience: Any, client_id: str, authorization: str) -> Tally:
        """The audience's users over every users partition: this worker's, and the others' asked."""
        me = str(app.conf.canonical_url).rstrip("/")
        owners = held(topo)
        others = {url: parts for url, parts in owners.items() if url != me and parts}
        asked = [asyncio.ensure_future(ask(url, parts, raw_audience, authorization)) for url, parts in others.items()]
        try:
            total = await count_local(topo, audience, client_id, mine(topo))  # while the others count theirs
        except BaseException:
            for task in asked:
                task.cancel()
            raise
        for url, answer in zip(others, await asyncio.gather(*asked, return_exceptions=True), strict=True):
            if isinstance(answer, BaseException):
                event(log, "audience preview: a worker did not count", logging.WARNING, url=url, exc=repr(answer))
                continue
            total.add(answer)
        return total

    @app.page("/audiences/preview/", name="clarion.audience_preview")
    class Preview(View):
        async def post(self, request: Request) -> Response:
            """Count an audience of the caller's users (the API's POST /audiences/preview)."""
            caller = await authenticated(topo, self, request, "read")
            if not isinstance(caller, Caller):
                return caller
            try:
                body = orjson.loads(await request.read())
            except orjson.JSONDecodeError as exc:
                return _error(self, 400, "body", f"not valid JSON: {exc}")
            if not isinstance(body, dict):
                return _error(self, 400, "body", "must be a JSON object")
            try:
                audience = audience_from_body(body.get("audience"))
            except ValidationFailed as exc:
                return self.json({"error": "invalid request", "errors": exc.errors}, status=400)
            except ExpressionError as exc:
                return _error(self, 422, ExpressionError.field, f"audience.where: {exc}")
            if "local" in request.query:  # another worker asks for the partitions it named
                named = body.get("partitions")
                if not isinstance(named, list) or not all(isinstance(p, int) for p in named):
                    return _error(self, 400, "partitions", "must be a list of partition numbers")
                tally = await count_local(topo, audience, caller.client_id, mine(topo) & set(named))
                return self.json(tally.body())
            authorization = request.headers["Authorization"]
            total = await everywhere(audience, body["audience"], caller.client_id, authorization)
            missing = sorted(set(range(topo.declared.settings.critical_partitions)) - total.partitions)
            if missing:
                error = f"no worker counted users partitions {missing} (a rebalance, or a worker down): try again"
                return self.json({"error": error}, status=503)
            answer = total.body()
            del answer["partitions"]
            return self.json(answer)
