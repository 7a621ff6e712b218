"""APNs-shaped endpoint: POST /3/device/{token}."""

from __future__ import annotations

import uuid
from functools import partial
from typing import TYPE_CHECKING

import orjson
from aiohttp import web

from clarion.providers.simulator.core import json_response as _json

if TYPE_CHECKING:
    from clarion.providers.simulator import Simulator



def routes(sim: Simulator) -> list[web.RouteDef]:
    """The endpoints this module serves on the simulator's app."""
    return [web.post("/3/device/{token}", partial(apns, sim))]

async def apns(sim: Simulator, request: web.Request) -> web.Response:
    if not request.headers.get("authorization", "").startswith("bearer "):
        return _json(403, {"reason": "MissingProviderToken"})
    if not request.headers.get("apns-topic"):
        return _json(400, {"reason": "MissingTopic"})
    try:
        payload = await request.json(loads=orjson.loads)
        alert = payload["aps"]["alert"]
    except (ValueError, KeyError, TypeError):
        return _json(400, {"reason": "PayloadEmpty"})
    token = request.match_info["token"]
    if not all(ch in "0123456789abcdefABCDEF" for ch in token):
        return _json(400, {"reason": "BadDeviceToken"})
    meta = {**payload.get("clarion", {}), "title": alert.get("title"), "body": alert.get("body")}
    apns_id = str(uuid.uuid4()).upper()
    return await sim._answer("apns", token, meta, lambda r: web.Response(status=200, headers={"apns-id": apns_id}))
