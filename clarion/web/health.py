"""What the API's /ready checks: its producer reaches a broker, its templates and API keys are read.

/healthz checks nothing but that the process answers (liveness: restarting it would not
fix a broker outage). /ready is what a load balancer should route by: the producer's
client must get a metadata answer from a broker (one request, cached for a few seconds,
so a busy health checker costs the broker nothing), and the templates and API-keys views
must have read their topics to the end and still be following them.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiokafka import AIOKafkaProducer

from clarion.tables.mirror import TopicMirror


class ProducerProbe:
    """Whether the producer's client gets a metadata answer from a broker, asked at most every `ttl_s`."""

    def __init__(self, producer: AIOKafkaProducer, ttl_s: float = 5.0, timeout_s: float = 2.0) -> None:
        self.producer = producer
        self.ttl_s = ttl_s
        self.timeout_s = timeout_s
        self._last: dict[str, Any] | None = None
        self._at = 0.0
        self._lock = asyncio.Lock()

    async def check(self) -> dict[str, Any]:
        async with self._lock:  # concurrent checks share one metadata request
            if self._last is None or time.monotonic() - self._at >= self.ttl_s:
                self._last = await self._ask()
                self._at = time.monotonic()
        return {**self._last, "checked_s_ago": round(time.monotonic() - self._at, 3)}

    async def _ask(self) -> dict[str, Any]:
        client = self.producer.client
        try:
            answered = await asyncio.wait_for(client.force_metadata_update(), self.timeout_s)
        except TimeoutError:
            return {"ok": False, "error": f"no broker answered a metadata request within {self.timeout_s:g} s"}
        except Exception as exc:
            return {"ok": False, "error": f"metadata request failed: {exc!r}"[:300]}
        brokers = len(client.cluster.brokers())
        if not answered or not brokers:
            return {"ok": False, "brokers": brokers, "error": "no broker answered a metadata request"}
        return {"ok": True, "brokers": brokers}


def view_check(view: TopicMirror[Any] | None) -> dict[str, Any]:
    """A topic mirror read to its end and still following it; with how much it holds."""
    if view is None:
        return {"ok": False, "error": "not started"}
    return {"ok": view.following, "entries": len(view), "position": view.position}
