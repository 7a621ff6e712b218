"""SES v2-shaped endpoint: POST /v2/email/outbound-emails."""

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
    return [web.post("/v2/email/outbound-emails", partial(ses, sim))]

async def ses(sim: Simulator, request: web.Request) -> web.Response:
    if not request.headers.get("authorization", "").startswith("AWS4-HMAC-SHA256 "):
        return _json(
            403, {"__type": "MissingAuthenticationTokenException", "message": "Missing Authentication Token"}
        )
    try:
        body = await request.json(loads=orjson.loads)
        to = body["Destination"]["ToAddresses"]
        simple = body["Content"]["Simple"]
        body["FromEmailAddress"]
    except (ValueError, KeyError, TypeError):
        return _json(400, {"__type": "BadRequestException", "message": "Missing required field"})
    if len(to) != 1:
        return _json(400, {"__type": "BadRequestException", "message": "clarion sends one recipient per call"})
    tags = {t.get("Name"): t.get("Value") for t in body.get("EmailTags", [])}
    meta = {
        "nid": tags.get("clarion_nid"),
        "did": tags.get("clarion_did"),
        "subject": simple.get("Subject", {}).get("Data"),
        "text": simple.get("Body", {}).get("Text", {}).get("Data"),
        "html": simple.get("Body", {}).get("Html", {}).get("Data"),
    }
    return await sim._answer("email", to[0], meta, lambda r: _json(200, {"MessageId": f"0100{r['seq']:012d}-sim"}))
