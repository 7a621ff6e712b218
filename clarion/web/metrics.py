"""The API's GET /metrics (Prometheus text format) and its per-request metrics and access log.

One middleware, outermost, times every request and counts it by route template (never
the raw path: ids would make a series each) and status, after the error middleware has
turned any failure into its JSON answer. It also writes the access log line (INFO,
logger `clarion.access`, JSON like every log line) unless CLARION_ACCESS_LOG=0.
/metrics needs an API key with the `metrics` scope: the figures are summed over every
client, so a client's `read` key must not see them (tables/api_keys.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector, generate_latest

from clarion.logs import event
from clarion.web.context import CALLER, SETTINGS, TRACE_ID, TRACEPARENT_RE, requires

log = logging.getLogger("clarion.access")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
SECONDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
UNMATCHED = "unmatched"  # the route of a request no route matched (404, 405)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})  # any other: "other"


class ApiMetrics:
    """One API application's registry: requests by route and status, their latency, the process."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        self.requests = Counter("clarion_api_requests", "API requests by method, route template and status",
                                ["method", "route", "status"], registry=self.registry)  # fmt: skip
        self.seconds = Histogram("clarion_api_request_seconds", "API request latency by method and route template",
                                 ["method", "route"], buckets=SECONDS, registry=self.registry)  # fmt: skip
        self._children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        children = self._children.get((method, route, status))
        if children is None:  # labels() costs a lock and a sort: once per combination (bounded: routes x statuses)
            children = (self.requests.labels(method, route, str(status)), self.seconds.labels(method, route))
            self._children[(method, route, status)] = children
        children[0].inc()
        children[1].observe(seconds)


METRICS = web.AppKey("metrics", ApiMetrics)


def route_of(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else UNMATCHED


@web.middleware
async def observed(request: web.Request, handler: Any) -> web.StreamResponse:
    """Count and time the request; then its access log line."""
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:  # the error middleware answers the others; redirects pass through
        status = exc.status
        raise
    except asyncio.CancelledError:  # the client went away
        status = 499
        raise
    finally:
        elapsed = time.perf_counter() - started
        route = route_of(request)
        method = request.method if request.method in METHODS else "other"  # a client picks it: keep series bounded
        request.app[METRICS].observe(method, route, status, elapsed)
        if request.app[SETTINGS].access_log and log.isEnabledFor(logging.INFO):
            access_line(request, route, status, elapsed)


def access_line(request: web.Request, route: str, status: int, elapsed: float) -> None:
    caller = request.get(CALLER)
    trace_id = request.get(TRACE_ID)
    if trace_id is None:  # the handler did not ask for one: the caller's, if it sent one
        match = TRACEPARENT_RE.match(request.headers.get("traceparent", ""))
        trace_id = match.group(1) if match else ""
    event(log, "request", method=request.method[:20], route=route, path=request.path[:200], status=status,
          duration_ms=round(elapsed * 1000, 3), client_id=caller.client_id if caller else "",
          trace_id=trace_id)  # fmt: skip


@requires("metrics")
async def get_metrics(request: web.Request) -> web.Response:
    """Prometheus text format; needs an API key with the `metrics` scope."""
    body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


def install_metrics(app: web.Application) -> None:
    """GET /metrics and the observing middleware (outermost: it sees every answer, errors included)."""
    app[METRICS] = ApiMetrics()
    app.middlewares.insert(0, observed)
    app.router.add_get("/metrics", get_metrics)
