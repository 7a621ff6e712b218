"""The dashboard's JSON endpoints (/ui/api/…): each needs the API key, and shows its client's data only.

- lanes, outcomes, dlq: what this API process has read of the `outcomes` and `dlq` topics
  (web/ui_tail.py, web/ui_books.py). The topics are read only while a dashboard is open:
  from a little before their end on the first request, and no longer after `IDLE_S`
  without one.
- dlq/replay (scope send): a dead letter of the caller's own, from a lane or the requests
  topic, is put back with clarion/dlq.py's replay (a delivery keeps its id, and the ledger
  makes a second replay send nothing). Needs the Redis ledger the workers share; without
  it the page shows the `clarion dlq replay` command instead.
- templates and their preview: web/ui_templates.py.
- users, suppressed, campaigns: asked of a worker (web/table_pages.py), personal fields masked there.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import aiohttp
from aiohttp import web
from yarl import URL

from clarion import dlq
from clarion.schemas.codec import PoisonMessage, decode
from clarion.schemas.records import DeliveryTask, NotificationRequest
from clarion.tables.api_keys import Caller
from clarion.topology.catalog import catalog
from clarion.topology.settings import Settings
from clarion.web.context import CALLER, HTTP, SETTINGS, Rejected, error_response, json_response, read_body, requires
from clarion.web.ui_books import DeadLetterBook, Entry, OutcomeBook
from clarion.web.ui_tail import TopicTail

IDLE_S = 600.0  # the topics are followed until no dashboard has asked for this long
BACKFILL = 200  # records per partition read from before the end when a dashboard opens
FIRST_READ_S = 3.0  # how long the first request waits for the backfill
REPLAYABLE = (DeliveryTask, NotificationRequest)


class Feeds:
    """The outcomes and dlq topics as this API process follows them for dashboards."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.specs = catalog(settings)
        self.outcomes = OutcomeBook()
        self.letters = DeadLetterBook()
        self.tails: list[TopicTail] = []
        self.last_used = 0.0
        self._lock = asyncio.Lock()
        self._watcher: asyncio.Task[None] | None = None

    async def ensure(self) -> None:
        """Start following the topics if not yet (the first request waits a little for the backfill)."""
        self.last_used = time.monotonic()
        if self.tails:
            return
        async with self._lock:
            if self.tails:
                return
            self.outcomes, self.letters = OutcomeBook(), DeadLetterBook()
            tails = [TopicTail(self.settings, self.specs["outcomes"].topic, BACKFILL, self.outcomes.fold),
                     TopicTail(self.settings, self.specs["dlq"].topic, BACKFILL, self.letters.fold)]  # fmt: skip
            try:
                for tail in tails:
                    await tail.start()
            except Exception as exc:  # the broker is away: say so, and try again on the next request
                for tail in tails:
                    await tail.stop()
                raise Rejected(503, f"the outcomes and dlq topics cannot be read: {type(exc).__name__}") from None
            self.tails = tails
            self._watcher = asyncio.create_task(self._stop_when_idle())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*(t.caught_up.wait() for t in tails)), FIRST_READ_S)

    async def _stop_when_idle(self) -> None:
        while time.monotonic() - self.last_used < IDLE_S:
            await asyncio.sleep(min(30.0, IDLE_S))
        async with self._lock:
            tails, self.tails = self.tails, []
            for tail in tails:
                await tail.stop()

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        for tail in self.tails:
            await tail.stop()
        self.tails = []

    def replayable(self, entry: Entry, client_id: str) -> bool:
        """A letter the client may replay from the dashboard: its own request or delivery, readable."""
        by_topic = {spec.topic: spec for spec in self.specs.values()}
        spec = by_topic.get(entry.letter.source_topic)
        if spec is None or spec.value not in REPLAYABLE:
            return False
        try:
            record = decode(spec.value, entry.letter.payload.encode())
        except PoisonMessage:
            return False
        return record.client_id == client_id


FEEDS = web.AppKey("ui_feeds", Feeds)


def _caller(request: web.Request) -> Caller:
    return request[CALLER]


def _feeds(request: web.Request) -> Feeds:
    return request.app[FEEDS]


@requires("read")
async def get_me(request: web.Request) -> web.Response:
    caller = _caller(request)
    return json_response(200, {"client_id": caller.client_id, "key_id": caller.key_id, "scopes": sorted(caller.scopes),
                               "replay": bool(request.app[SETTINGS].redis)})  # fmt: skip


@requires("read")
async def get_lanes(request: web.Request) -> web.Response:
    await _feeds(request).ensure()
    return json_response(200, _feeds(request).outcomes.lanes(_caller(request).client_id))


@requires("read")
async def get_outcomes(request: web.Request) -> web.Response:
    await _feeds(request).ensure()
    q = request.query
    try:
        limit = max(1, min(500, int(q.get("limit", "100"))))
    except ValueError:
        raise Rejected(400, "must be a number from 1 to 500", "limit") from None
    filters = {name: q.get(name, "")[:200] for name in ("status", "channel", "lane", "notification_id")}
    rows = _feeds(request).outcomes.recent(_caller(request).client_id, limit, **filters)
    return json_response(200, {"outcomes": rows})


@requires("read")
async def get_dlq(request: web.Request) -> web.Response:
    feeds = _feeds(request)
    await feeds.ensure()
    client_id = _caller(request).client_id
    replay = bool(request.app[SETTINGS].redis)
    names = {spec.topic: name for name, spec in feeds.specs.items()}
    rows = []
    for entry in feeds.letters.entries(client_id):
        letter = entry.letter
        rows.append({"id": entry.id, "ts": letter.ts, "source_topic": letter.source_topic,
                     "source": names.get(letter.source_topic, letter.source_topic), "reason": letter.reason,
                     "notification_id": letter.notification_id, "delivery_id": letter.delivery_id,
                     "attempt": letter.attempt, "replayed_at": entry.replayed_at,
                     "replayable": replay and feeds.replayable(entry, client_id),
                     "cli": f"clarion dlq replay {entry.id}"})  # fmt: skip
    return json_response(200, {"letters": rows, "replay": replay})


@requires("send")
async def post_dlq_replay(request: web.Request) -> web.Response:
    body = await read_body(request)
    ids = body.get("ids") if isinstance(body, dict) else None
    if not isinstance(ids, list) or not ids or len(ids) > 100 or not all(isinstance(i, str) for i in ids):
        raise Rejected(400, "must be a list of 1 to 100 dead letter ids (<partition>:<offset>)", "ids")
    if not request.app[SETTINGS].redis:
        raise Rejected(409, "replay needs the Redis ledger the workers share: use `clarion dlq replay`", "ids")
    feeds = _feeds(request)
    client_id = _caller(request).client_id
    found = feeds.letters.find(client_id, ids)
    if len(found) != len(set(ids)):  # another client's, or not held here: as good as unknown
        raise Rejected(404, "unknown dead letter id(s) for this key", "ids")
    refused = [entry.id for entry in found if not feeds.replayable(entry, client_id)]
    if refused:
        raise Rejected(422, f"not replayable from the dashboard: {', '.join(refused)}; use `clarion dlq replay`",
                       "ids")  # fmt: skip
    letters = [dlq.Letter(entry.partition, entry.offset, entry.letter) for entry in found]
    report = await dlq.replay(request.app[SETTINGS], letters)
    now = time.time()
    for entry in found:
        entry.replayed_at = now
    return json_response(200, {"replayed": report.replayed, "skipped": report.skipped,
                               "dead_released": report.dead_released})  # fmt: skip


async def _ask_worker(request: web.Request, path: str) -> web.Response:
    """A worker table page for the caller (the worker checks the same key and masks what it shows)."""
    query = {name: request.query[name][:200] for name in ("after", "limit") if name in request.query}
    url = URL(f"{request.app[SETTINGS].status_url}{path}").with_query(query)
    try:
        async with request.app[HTTP].get(url, headers={"Authorization": request.headers["Authorization"]}) as resp:
            body = await resp.read()
    except (aiohttp.ClientError, TimeoutError) as exc:
        return error_response(503, f"no worker answered: {type(exc).__name__}")
    if resp.status not in (200, 401, 403):
        return error_response(503, f"the worker answered {resp.status}")
    return web.Response(status=resp.status, body=body, content_type="application/json")


@requires("read")
async def get_users(request: web.Request) -> web.Response:
    return await _ask_worker(request, "/ui/users/")


@requires("read")
async def get_suppressed(request: web.Request) -> web.Response:
    return await _ask_worker(request, "/ui/suppressed/")


@requires("read")
async def get_campaigns(request: web.Request) -> web.Response:
    return await _ask_worker(request, "/ui/campaigns/")


ROUTES = [
    web.get("/ui/api/me", get_me),
    web.get("/ui/api/lanes", get_lanes),
    web.get("/ui/api/outcomes", get_outcomes),
    web.get("/ui/api/dlq", get_dlq),
    web.post("/ui/api/dlq/replay", post_dlq_replay),
    web.get("/ui/api/users", get_users),
    web.get("/ui/api/suppressed", get_suppressed),
    web.get("/ui/api/campaigns", get_campaigns),
]
