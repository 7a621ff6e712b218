"""Twilio-shaped endpoint: POST /2010-04-01/Accounts/{sid}/Messages.json."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

from aiohttp import web

from clarion.providers.simulator.core import json_response as _json

if TYPE_CHECKING:
    from clarion.providers.simulator import Simulator



def routes(sim: Simulator) -> list[web.RouteDef]:
    """The endpoints this module serves on the simulator's app."""
    return [web.post("/2010-04-01/Accounts/{sid}/Messages.json", partial(twilio, sim))]

async def twilio(sim: Simulator, request: web.Request) -> web.Response:
    if request.headers.get("Authorization", "")[:6] != "Basic ":
        return _json(401, {"code": 20003, "message": "Authenticate", "status": 401})
    form = await request.post()
    missing = [f for f in ("To", "From", "Body") if not form.get(f)]
    if missing:
        return _json(
            400,
            {
                "code": 21604 if "To" in missing else 21602,
                "message": f"A '{missing[0]}' parameter is required.",
                "status": 400,
            },
        )
    query = parse_qs(urlsplit(str(form.get("StatusCallback", ""))).query)
    meta = {"nid": query.get("nid", [None])[0], "did": query.get("did", [None])[0], "body": form["Body"]}
    sid = request.match_info["sid"]
    return await sim._answer(
        "sms",
        str(form["To"]),
        meta,
        lambda r: _json(
            201, {"sid": f"SM{r['seq']:032x}", "status": "queued", "account_sid": sid, "to": form["To"]}
        ),
    )
