"""HTTP/1.1 load generator for clarion's API, run by the benchmark as a separate process.

Hand-rolled on asyncio (uvloop when importable) with keep-alive connections and minimal response
parsing (status line, Content-Length, body), so one core can drive thousands of requests/s: aiohttp's
client costs ~120 µs of CPU per request, this ~10-25 µs. Requests are driven by protocol callbacks, not
by a coroutine per request (asyncio streams cost 20-40 µs per request here). Standalone on purpose:
standard library, orjson and (optionally) uvloop, no clarion imports.

Modes, each printing one JSON summary object on stdout (progress and errors go to stderr):

  open    POST /notif at a constant arrival rate; request i is scheduled at start + i/rate and sent
          then on a free connection (or late, when --connections are all busy). Latencies are measured
          from the schedule, so a slow server cannot hide behind the generator (no coordinated
          omission). Timers count whole ms, so requests go out up to ~2 ms late even when the
          server keeps up (see late_p99_ms; done - sent in --out is the service time alone).
          --out writes one JSON line per request. "achieved_rate" is 2xx answers
          per second from the first schedule to the last answer.
  closed  --connections connections sending POST /notif back to back.
  batch   --connections connections sending POST /notif/batch (--batch items each) back to back.

Closed and batch modes run --warmup seconds of load first, then count the requests completing in
the next --duration seconds. A failed request (connection error, 10 s timeout, unparsable response)
is counted in "errors" under the exception's name, an HTTP error under its status code. Every summary
also has "cpu_us_per_request", the generator's own CPU cost, to spot a saturated generator.
Idempotency keys are "<random run id>-<counter>", unique across runs. Every request carries
`Authorization: Bearer <--key>`; the bodies name no client_id (the key's client is the sender).

    python bench/loadgen.py open --url http://127.0.0.1:8080 --key clk_... --rate 5000 --duration 10 --out req.jsonl
    python bench/loadgen.py closed --url http://127.0.0.1:8080 --key clk_... --connections 32 --duration 10
    python bench/loadgen.py batch --url http://127.0.0.1:8080 --key clk_... --connections 4 --batch 1000 --duration 10
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import math
import secrets
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import orjson

try:
    import uvloop
except ImportError:  # pragma: no cover - plain asyncio is only slower
    uvloop = None

TIMEOUT_S = 10.0
clock = time.monotonic  # not loop.time(): it has 1 ms resolution under uvloop

Outcome = tuple[int, bytes] | str  # (status, body), or the name of the exception that failed the request


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    host_header: bytes


def parse_target(url: str) -> Target:
    """Split a base URL such as http://127.0.0.1:8080 (plain HTTP only)."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise SystemExit(f"loadgen: only http://host[:port] URLs are supported, got {url!r}")
    port = parts.port or 80
    return Target(parts.hostname, port, f"{parts.hostname}:{port}".encode())


# ---------------------------------------------------------------------------------------------- bodies


class Bodies:
    """Builds /notif bodies from pre-encoded bytes templates, one per user id, and a counter."""

    def __init__(self, users: int, user_prefix: str, template: str, channels: list[str]) -> None:
        run_id = secrets.token_hex(6)
        head = b'{"idempotency_key":"' + run_id.encode() + b'-\x00","user_id":'
        tail = b',"channels":' + orjson.dumps(channels) + b',"template_id":' + orjson.dumps(template)
        tail += b',"params":{"n":\x00}}'
        self._templates = [_as_format(head + orjson.dumps(f"{user_prefix}{u}") + tail) for u in range(users)]
        self._users = users
        self._next = 0

    def one(self) -> bytes:
        n = self._next
        self._next = n + 1
        return self._templates[n % self._users] % (n, n)

    def batch(self, size: int) -> bytes:
        start = self._next
        self._next = start + size
        templates, users = self._templates, self._users
        items = b",".join([templates[n % users] % (n, n) for n in range(start, start + size)])
        return b'{"notifications":[' + items + b"]}"


def _as_format(raw: bytes) -> bytes:
    """Escape literal '%' and turn the \\x00 placeholders into %d."""
    return raw.replace(b"%", b"%%").replace(b"\x00", b"%d")


def make_bodies(args: argparse.Namespace) -> Bodies:
    channels = [c.strip() for c in args.channels.split(",") if c.strip()]
    return Bodies(args.users, args.user_prefix, args.template, channels)


def payload_maker(args: argparse.Namespace, target: Target) -> Callable[[], bytes]:
    """A function returning the next full request (head and body) for the mode."""
    bodies = make_bodies(args)
    if args.mode == "batch":
        path, body_of = "/notif/batch", lambda: bodies.batch(args.batch)
    else:
        path, body_of = "/notif", bodies.one
    head = f"POST {path} HTTP/1.1\r\nHost: ".encode() + target.host_header
    head += b"\r\nAuthorization: Bearer " + args.key.encode()
    head = _as_format(head + b"\r\nContent-Type: application/json\r\nContent-Length: \x00\r\n\r\n")

    def make() -> bytes:
        body = body_of()
        return head % len(body) + body

    return make


# ---------------------------------------------------------------------------------------------- connections


class _Wire(asyncio.Protocol):
    """One TCP connection: parses the responses and hands them to its Connection."""

    def __init__(self, owner: Connection) -> None:
        self.owner = owner
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.length = -1  # body length of the response being read, -1 while reading its head
        self.status = 0
        self.close_after = False
        self.served = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        if self.length < 0:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self.buf = buf
                return
            if not self._parse_head(buf[: end + 2]):
                self.buf = buf  # part of an answer came: no retry
                self.owner._on_lost(self, "ProtocolError")
                self.transport.abort()
                return
            buf = buf[end + 4 :]
        if len(buf) < self.length:
            self.buf = buf
            return
        body = buf[: self.length] if len(buf) > self.length else buf
        self.buf, self.length = b"", -1
        self.served += 1
        if self.close_after:
            self.transport.close()
        self.owner._on_response(self, (self.status, body))

    def _parse_head(self, head: bytes) -> bool:
        lower = head.lower()
        at = lower.find(b"\r\ncontent-length:")
        if not head.startswith(b"HTTP/1.") or at < 0:
            return False
        try:
            self.status = int(head[9:12])
            self.length = int(head[at + 17 : head.index(b"\r\n", at + 17)])
        except ValueError:
            return False
        self.close_after = b"\r\nconnection: close" in lower
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner._on_lost(self, type(exc).__name__ if exc else "ServerDisconnected")


OnDone = Callable[["Connection", Outcome], None]


class Connection:
    """A keep-alive HTTP/1.1 connection carrying one request at a time, (re)connected on demand.

    send() writes a request; on_done(conn, outcome) is called back with the response or failure.
    A request failing on a reused connection before any byte of answer is sent again once on a fresh
    one (the server may have closed it as idle; idempotency keys make a duplicate POST harmless).
    """

    def __init__(self, target: Target) -> None:
        self.target = target
        self.wire: _Wire | None = None
        self.connecting: asyncio.Task | None = None
        self.payload = b""
        self.on_done: OnDone | None = None
        self.retried = False
        self.sent_at = 0.0
        self.tag: object = None  # caller's data about the request in flight

    def send(self, payload: bytes, on_done: OnDone) -> None:
        self.payload, self.on_done, self.retried = payload, on_done, False
        self.sent_at = clock()
        self._write()

    def _write(self) -> None:
        if self.wire is None:
            self.connecting = asyncio.create_task(self._connect_and_write())
        else:
            self.wire.transport.write(self.payload)

    async def _connect_and_write(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(TIMEOUT_S):
                _, wire = await loop.create_connection(lambda: _Wire(self), self.target.host, self.target.port)
        except Exception as exc:
            self._finish(type(exc).__name__)
            return
        finally:
            self.connecting = None
        self.wire = wire
        wire.transport.write(self.payload)

    def _on_response(self, wire: _Wire, outcome: Outcome) -> None:
        if wire.close_after:
            self.wire = None
        self._finish(outcome)

    def _on_lost(self, wire: _Wire, error: str) -> None:
        if wire is not self.wire:
            return
        self.wire = None
        if self.on_done is None:
            return
        if wire.served and wire.length < 0 and not wire.buf and not self.retried:
            self.retried = True
            self._write()
        else:
            self._finish(error)

    def _finish(self, outcome: Outcome) -> None:
        on_done, self.on_done, self.payload = self.on_done, None, b""
        if on_done is not None:
            on_done(self, outcome)

    def expire(self, now: float) -> None:
        """Fail the request in flight with TimeoutError if it has waited for TIMEOUT_S on an open connection."""
        if self.on_done is not None and self.wire is not None and now - self.sent_at > TIMEOUT_S:
            wire, self.wire = self.wire, None
            wire.transport.abort()
            self._finish("TimeoutError")

    def close(self) -> None:
        if self.connecting is not None:
            self.connecting.cancel()
        if self.wire is not None:
            self.wire.transport.close()
            self.wire = None


async def watchdog(conns: list[Connection]) -> None:
    """Enforce the request timeout (one scan every 0.5 s is cheaper than a timer per request)."""
    while True:
        await asyncio.sleep(0.5)
        now = clock()
        for conn in conns:
            conn.expire(now)


async def shut(conns: list[Connection], guard: asyncio.Task) -> None:
    guard.cancel()
    for conn in conns:
        conn.close()
    await asyncio.gather(guard, *(c.connecting for c in conns if c.connecting), return_exceptions=True)
    await asyncio.sleep(0)  # let the transports report their closing


# ---------------------------------------------------------------------------------------------- stats


def percentile_ms(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 3)


@dataclass
class Tally:
    """Outcomes of the requests that count."""

    latencies: list[float] = field(default_factory=list)
    ok: int = 0
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    accepted: int = 0
    rejected: int = 0

    def add(self, outcome: Outcome, latency: float) -> None:
        if isinstance(outcome, str):
            self.errors[outcome] += 1
            return
        self.latencies.append(latency)
        if 200 <= outcome[0] < 300:
            self.ok += 1
        else:
            self.errors[str(outcome[0])] += 1

    def add_batch(self, outcome: Outcome) -> None:
        """Count a batch answer's accepted and rejected notifications."""
        if isinstance(outcome, str) or outcome[0] != 200:
            return
        try:
            answer = orjson.loads(outcome[1])
            self.accepted += int(answer["accepted"])
            self.rejected += int(answer["rejected"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            self.errors["BadBatchAnswer"] += 1

    @property
    def requests(self) -> int:
        return self.ok + self.errors.total()


def cpu_per_request(cpu: float, requests: int) -> float | None:
    return round(cpu / requests * 1e6, 1) if requests else None


# ---------------------------------------------------------------------------------------------- open loop


class Pool:
    """Up to `size` connections; acquire() reuses the most recently released one, makes a new one, or waits."""

    def __init__(self, target: Target, size: int) -> None:
        self.target = target
        self.size = size
        self.all: list[Connection] = []
        self.idle: list[Connection] = []
        self.waiters: collections.deque[asyncio.Future[Connection]] = collections.deque()

    async def acquire(self) -> Connection:
        if self.idle:
            return self.idle.pop()
        if len(self.all) < self.size:
            self.all.append(Connection(self.target))
            return self.all[-1]
        waiter = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        return await waiter

    def release(self, conn: Connection) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        self.idle.append(conn)


class OpenLoop:
    """Sends request i at start + i/rate on a free connection; records (i, scheduled, sent, done, outcome)."""

    def __init__(self, pool: Pool, make_payload: Callable[[], bytes]) -> None:
        self.pool = pool
        self.make_payload = make_payload
        self.records: list[tuple[int, float, float, float, Outcome]] = []
        self.in_flight = 0
        self.drained: asyncio.Future[None] | None = None

    async def run(self, rate: float, total: int) -> float:
        """Returns the start time (the schedule of request 0)."""
        start = clock() + 0.01
        for i in range(total):
            scheduled = start + i / rate
            while (delay := scheduled - clock()) > 0:  # timers may fire early: never send ahead of schedule
                await asyncio.sleep(math.ceil(delay * 1000) / 1000)  # uvloop timers count whole ms
            conn = await self.pool.acquire()
            conn.tag = (i, scheduled)
            self.in_flight += 1
            conn.send(self.make_payload(), self._on_done)
        if self.in_flight:
            self.drained = asyncio.get_running_loop().create_future()
            await self.drained
        return start

    def _on_done(self, conn: Connection, outcome: Outcome) -> None:
        i, scheduled = conn.tag
        self.records.append((i, scheduled, conn.sent_at, clock(), outcome))
        self.pool.release(conn)
        self.in_flight -= 1
        if not self.in_flight and self.drained is not None:
            self.drained.set_result(None)


def nid_of(outcome: Outcome) -> str | None:
    if isinstance(outcome, str) or not 200 <= outcome[0] < 300:
        return None
    try:
        return orjson.loads(outcome[1]).get("notification_id")
    except (orjson.JSONDecodeError, AttributeError):
        return None


def write_records(path: str, records: list[tuple], wall_offset: float) -> None:
    """One JSON line per request; times as time.time() floats, status the HTTP code or the exception name."""
    with open(path, "wb") as out:
        for i, scheduled, sent, done, outcome in sorted(records, key=lambda r: r[0]):
            line = {
                "i": i,
                "scheduled": scheduled + wall_offset,
                "sent": sent + wall_offset,
                "done": done + wall_offset,
                "status": outcome if isinstance(outcome, str) else outcome[0],
                "nid": nid_of(outcome),
            }
            out.write(orjson.dumps(line) + b"\n")


async def run_open(args: argparse.Namespace) -> dict:
    target = parse_target(args.url)
    pool = Pool(target, args.connections)
    loop = OpenLoop(pool, payload_maker(args, target))
    wall_offset = time.time() - clock()
    guard = asyncio.create_task(watchdog(pool.all))
    cpu0 = time.process_time()
    try:
        start = await loop.run(args.rate, int(args.rate * args.duration))
    finally:
        await shut(pool.all, guard)
    cpu = time.process_time() - cpu0
    if args.out:
        write_records(args.out, loop.records, wall_offset)
    return open_summary(args, loop.records, start, cpu)


def open_summary(args: argparse.Namespace, records: list[tuple], start: float, cpu: float) -> dict:
    tally = Tally()
    late = []
    for _i, scheduled, sent, done, outcome in records:
        tally.add(outcome, done - scheduled)
        late.append(sent - scheduled)
    elapsed = max((r[3] for r in records), default=start) - start
    return {
        "mode": "open",
        "rate": args.rate,
        "duration": args.duration,
        "sent": len(records),
        "ok": tally.ok,
        "errors": dict(tally.errors),
        "achieved_rate": round(tally.ok / elapsed, 1) if elapsed > 0 else 0.0,
        "late_p99_ms": percentile_ms(late, 0.99),
        "resp_p50_ms": percentile_ms(tally.latencies, 0.50),
        "resp_p99_ms": percentile_ms(tally.latencies, 0.99),
        "cpu_us_per_request": cpu_per_request(cpu, len(records)),
    }


# ---------------------------------------------------------------------------------------------- closed loop


class ClosedLoop:
    """Each connection sends its next request as soon as the previous one is answered, until `end`;
    requests completing between `begin` and `end` are tallied."""

    def __init__(self, make_payload: Callable[[], bytes], begin: float, end: float, batch: bool) -> None:
        self.make_payload = make_payload
        self.begin, self.end = begin, end
        self.batch = batch
        self.tally = Tally()
        self.active = 0
        self.finished: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def start(self, conns: list[Connection]) -> None:
        self.active = len(conns)
        for conn in conns:
            self._next(conn)

    def _next(self, conn: Connection) -> None:
        if clock() < self.end:
            conn.send(self.make_payload(), self._on_done)
            return
        self.active -= 1
        if not self.active:
            self.finished.set_result(None)

    def _on_done(self, conn: Connection, outcome: Outcome) -> None:
        now = clock()
        if self.begin <= now <= self.end:
            self.tally.add(outcome, now - conn.sent_at)
            if self.batch:
                self.tally.add_batch(outcome)
        self._next(conn)


async def run_closed(args: argparse.Namespace) -> dict:
    target = parse_target(args.url)
    begin = clock() + args.warmup
    loop = ClosedLoop(payload_maker(args, target), begin, begin + args.duration, args.mode == "batch")
    conns = [Connection(target) for _ in range(args.connections)]
    guard = asyncio.create_task(watchdog(conns))
    try:
        loop.start(conns)
        await asyncio.sleep(max(0.0, loop.begin - clock()))
        cpu0 = time.process_time()
        await asyncio.sleep(max(0.0, loop.end - clock()))
        cpu = time.process_time() - cpu0
        await loop.finished
    finally:
        await shut(conns, guard)
    return closed_summary(args, loop.tally, cpu)


def closed_summary(args: argparse.Namespace, tally: Tally, cpu: float) -> dict:
    latency = {
        "resp_p50_ms": percentile_ms(tally.latencies, 0.50),
        "resp_p99_ms": percentile_ms(tally.latencies, 0.99),
        "cpu_us_per_request": cpu_per_request(cpu, tally.requests),
    }
    if args.mode == "batch":
        return {
            "mode": "batch",
            "connections": args.connections,
            "batch": args.batch,
            "duration": args.duration,
            "requests": tally.requests,
            "notifications_accepted": tally.accepted,
            "rejected": tally.rejected,
            "errors": dict(tally.errors),
            "notifications_per_s": round(tally.accepted / args.duration, 1),
            **latency,
        }
    return {
        "mode": "closed",
        "connections": args.connections,
        "duration": args.duration,
        "requests": tally.requests,
        "ok": tally.ok,
        "errors": dict(tally.errors),
        "rps": round(tally.requests / args.duration, 1),
        **latency,
    }


# ---------------------------------------------------------------------------------------------- CLI


def api_key(text: str) -> str:
    """A key fit for a header line: printable ASCII, no spaces."""
    if not text or not text.isascii() or not text.isprintable() or " " in text:
        raise argparse.ArgumentTypeError("an API key is printable ASCII without spaces")
    return text


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", required=True, help="base URL, e.g. http://127.0.0.1:8080")
    common.add_argument("--key", required=True, type=api_key, help="API key, sent as Authorization: Bearer KEY")
    common.add_argument("--duration", type=float, default=10.0, help="seconds of (measured) load")
    common.add_argument("--users", type=int, default=200, help="user ids are <prefix>0..<prefix>N-1")
    common.add_argument("--user-prefix", default="u")
    common.add_argument("--template", default="bench", help="template_id")
    common.add_argument("--channels", default="sms", help="comma-separated channel list")

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    modes = parser.add_subparsers(dest="mode", required=True)
    open_ = modes.add_parser("open", parents=[common], help="constant arrival rate on POST /notif")
    open_.add_argument("--rate", type=float, required=True, help="requests per second")
    open_.add_argument("--connections", type=int, default=256, help="max concurrent connections")
    open_.add_argument("--out", help="write one JSON line per request to this file")
    for name, connections, what in (("closed", 32, "POST /notif"), ("batch", 4, "POST /notif/batch")):
        mode = modes.add_parser(name, parents=[common], help=f"connections sending {what} back to back")
        mode.add_argument("--connections", type=int, default=connections)
        mode.add_argument("--warmup", type=float, default=1.0, help="seconds of load before measuring")
    modes.choices["batch"].add_argument("--batch", type=int, default=1000, help="notifications per request")
    return parser


async def run(args: argparse.Namespace) -> dict:
    return await (run_open(args) if args.mode == "open" else run_closed(args))


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    print(f"loadgen: {args.mode} load on {args.url} for {args.duration:g} s", file=sys.stderr)
    summary = uvloop.run(run(args)) if uvloop else asyncio.run(run(args))
    sys.stdout.write(orjson.dumps(summary).decode() + "\n")


if __name__ == "__main__":
    main()
