"""FCM HTTP v1-shaped endpoint: POST /v1/projects/{project}/messages:send."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

import orjson
from aiohttp import web

from clarion.providers.simulator.core import json_response as _json

if TYPE_CHECKING:
    from clarion.providers.simulator import Simulator



def routes(sim: Simulator) -> list[web.RouteDef]:
    """The endpoints this module serves on the simulator's app."""
    return [web.post("/v1/projects/{project}/messages:send", partial(fcm, sim))]

async def fcm(sim: Simulator, request: web.Request) -> web.Response:
    if not request.headers.get("Authorization", "").startswith("Bearer "):
        return _json(
            401,
            {
                "error": {
                    "code": 401,
                    "message": "Request is missing required authentication credential.",
                    "status": "UNAUTHENTICATED",
                }
            },
        )
    try:
        message = (await request.json(loads=orjson.loads))["message"]
        token = message["token"]
    except (ValueError, KeyError, TypeError):
        return _json(
            400, {"error": {"code": 400, "message": "Invalid JSON payload received.", "status": "INVALID_ARGUMENT"}}
        )
    data = message.get("data", {})
    notification = message.get("notification", {})
    meta = {
        "nid": data.get("clarion_nid"),
        "did": data.get("clarion_did"),
        "title": notification.get("title"),
        "body": notification.get("body"),
    }
    project = request.match_info["project"]
    return await sim._answer(
        "fcm", token, meta, lambda r: _json(200, {"name": f"projects/{project}/messages/{r['seq']}"})
    )
