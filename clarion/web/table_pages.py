"""Worker pages behind the dashboard's read-only table views: users, suppression, campaigns.

faust's own /table/ views stay off (they would show every client's personal data to
anyone); these show the API key's client's rows only, personal fields masked
(web/masking.py). A table is spread over the workers by partition, so the worker the API
asks reads the partitions it holds and asks every other worker that holds some
(`?local=1`, faust's table metadata), like the audience preview (web/audience_pages.py).
An answer lists at most `limit` rows in key order after `after`, and says whether every
partition was read (`complete`: false while a worker is away or the group rebalances).

- GET /ui/users/?after=&limit=       users, masked
- GET /ui/suppressed/?after=&limit=  suppressed addresses, masked, per user
- GET /ui/campaigns/?after=&limit=   campaigns with their state and counters
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import aiohttp
import msgspec
from faust.web import Request, Response, View

from clarion.logs import event
from clarion.schemas.codec import PoisonMessage, decode
from clarion.schemas.promo import Job
from clarion.schemas.records import UserProfile, scoped
from clarion.tables.api_keys import Caller
from clarion.tables.store import PartitionedStore
from clarion.tables.suppression import decode as decode_suppressions
from clarion.topology import faust_compat
from clarion.web.campaign_pages import describe
from clarion.web.masking import masked_suppressions, masked_user
from clarion.web.status import authenticated

if TYPE_CHECKING:
    from clarion.topology.topology import Topology

log = logging.getLogger("clarion.table_pages")
DEFAULT_LIMIT = 50
MAX_LIMIT = 200
ASK_TIMEOUT_S = 4.0
_job = msgspec.json.Decoder(Job).decode

# (partition, client, rows after this key, at most) -> the rows, each with its table key as "_key"
Rows = list[dict[str, Any]]
Reader = Callable[[int, str, str, int], Awaitable[Rows]]


def held(topo: Topology, table: Any) -> dict[str, set[int]]:
    """Each worker's URL -> the partitions of `table` it holds."""
    changelog = table.changelog_topic.get_topic_name()
    return {
        url.rstrip("/"): set(topics.get(changelog, ()))
        for url, topics in topo.declared.app.router.table_metadata(table.name).items()
    }


def limit_of(request: Request) -> int:
    try:
        return max(1, min(MAX_LIMIT, int(request.query.get("limit", DEFAULT_LIMIT))))
    except ValueError:
        return DEFAULT_LIMIT


def merge(rows: Rows, limit: int) -> tuple[Rows, bool]:
    """The first `limit` rows in key order, and whether more were read than shown."""
    rows = sorted(rows, key=lambda row: row["_key"])
    return rows[:limit], len(rows) > limit


def register_table_pages(topo: Topology) -> None:
    app = topo.declared.app

    async def local(table: Any, read: Reader, client_id: str, after: str, limit: int) -> tuple[Rows, set[int]]:
        """The first `limit` + 1 rows of the partitions this worker holds (none while its tables recover)."""
        if not faust_compat.recovered(app):
            return [], set()
        me = str(app.conf.canonical_url).rstrip("/")
        partitions = held(topo, table).get(me, set())
        rows: list[dict[str, Any]] = []
        for partition in sorted(partitions):
            rows.extend(await read(partition, client_id, after, limit))
            await asyncio.sleep(0)  # deliveries on this worker go on between partitions
        return merge(rows, limit + 1)[0], partitions

    async def ask(url: str, path: str, query: dict[str, str], authorization: str) -> dict[str, Any]:
        timeout = aiohttp.ClientTimeout(total=ASK_TIMEOUT_S)
        async with app.http_client.get(f"{url}{path}", params={**query, "local": "1"}, timeout=timeout,
                                       headers={"Authorization": authorization}) as resp:  # fmt: skip
            if resp.status != 200:
                raise ValueError(f"answered {resp.status}")
            return await resp.json()

    async def answer(web: View, request: Request, table: Any, path: str, read: Reader) -> Response:
        caller = await authenticated(topo, web, request, "read")
        if not isinstance(caller, Caller):
            return caller
        limit, after = limit_of(request), request.query.get("after", "")
        rows, partitions = await local(table, read, caller.client_id, after, limit)
        if "local" in request.query:
            return web.json({"rows": rows, "partitions": sorted(partitions)})
        me = str(app.conf.canonical_url).rstrip("/")
        others = [url for url, parts in held(topo, table).items() if url != me and parts]
        query = {"after": after, "limit": str(limit)}
        authorization = request.headers["Authorization"]
        answers = await asyncio.gather(*(ask(url, path, query, authorization) for url in others),
                                       return_exceptions=True)  # fmt: skip
        for url, got in zip(others, answers, strict=True):
            if not isinstance(got, dict):
                event(log, "table view: a worker did not answer", logging.WARNING, url=url, exc=repr(got))
                continue
            rows.extend(got.get("rows", []))
            partitions |= set(got.get("partitions", []))
        shown, more = merge(rows, limit)
        for row in shown:
            row.pop("_key", None)
        complete = partitions >= set(range(table.changelog_topic.partitions or 0))
        return web.json({"rows": shown, "more": more, "complete": complete})

    def scan(table: Any, partition: int, client_id: str, after: str, limit: int) -> list[tuple[str, bytes]]:
        """Up to `limit` + 1 of the client's rows of one partition after `after` (one more tells there are more)."""
        prefix = scoped(client_id, "")
        start = scoped(client_id, after) if after else ""
        found = PartitionedStore(table).scan(partition, prefix.encode(), start.encode(), limit + 1)
        return [(key.decode(), value) for key, value in found]

    async def read_users(partition: int, client_id: str, after: str, limit: int) -> Rows:
        rows = []
        for key, raw in scan(topo.declared.users, partition, client_id, after, limit):
            try:
                rows.append({"_key": key, **masked_user(decode(UserProfile, raw))})
            except PoisonMessage:  # the users agent validated it on the way in; an old record may differ
                continue
        return rows

    async def read_suppressed(partition: int, client_id: str, after: str, limit: int) -> Rows:
        rows = []
        for key, raw in scan(topo.declared.suppressed, partition, client_id, after, limit):
            user_id = key.partition("/")[2]
            entries = masked_suppressions(user_id, decode_suppressions(raw))
            if entries:
                rows.append({"_key": key, "user_id": user_id, "entries": entries})
        return rows

    async def read_campaigns(partition: int, client_id: str, after: str, limit: int) -> Rows:
        rows = []
        for key, raw in scan(topo.declared.campaigns, partition, client_id, after, limit):
            try:
                job = _job(raw)
            except (msgspec.DecodeError, msgspec.ValidationError):
                continue
            rows.append({"_key": key, **describe(job, await topo.resources.ledger.campaign_counts(key))})
        return rows

    def register(path: str, name: str, table: Any, read: Reader) -> None:
        @app.page(path, name=name)
        async def page(web: View, request: Request) -> Response:
            return await answer(web, request, table, path, read)

    register("/ui/users/", "clarion.ui_users", topo.declared.users, read_users)
    register("/ui/suppressed/", "clarion.ui_suppressed", topo.declared.suppressed, read_suppressed)
    register("/ui/campaigns/", "clarion.ui_campaigns", topo.declared.campaigns, read_campaigns)
