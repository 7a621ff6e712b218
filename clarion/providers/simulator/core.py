"""What every simulated provider endpoint shares."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json", headers=headers)
