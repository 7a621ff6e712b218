"""POST /audiences/preview: how many of the caller's users an audience holds, and a sample of their ids.

Body: `{"audience": {...}}`, the same shape as POST /promo's (clarion/schemas/audiences.py): a
wrong shape is a 400 naming `audience`, `audience.user_ids` or `audience.where`, a `where`
that does not parse a 422 naming `audience.where`. The users live in the workers' users
table, so the API asks a worker, which counts over every users partition
(web/audience_pages.py) and answers `{"count", "sample", "scanned", "complete"}`;
`complete` is false when the per-request bound on users read (`preview_max_users`) cut the
count short (a lower bound, then).
"""

from __future__ import annotations

import aiohttp
from aiohttp import web
from yarl import URL

from clarion.schemas.audiences import ExpressionError, audience_from_body
from clarion.schemas.validation import ValidationFailed
from clarion.web.context import HTTP, SETTINGS, Rejected, caller_of, error_response, read_body, requires


@requires("read")
async def post_audience_preview(request: web.Request) -> web.Response:
    body = await read_body(request)
    caller_of(request, body)  # the key names the client: a body naming another is refused
    if not isinstance(body, dict):
        raise ValidationFailed([{"field": "body", "error": "must be a JSON object"}])
    try:
        audience_from_body(body.get("audience"))
    except ExpressionError as exc:
        raise Rejected(422, f"audience.where: {exc}", ExpressionError.field) from None
    url = URL(f"{request.app[SETTINGS].status_url}/audiences/preview/", encoded=True)
    headers = {"Authorization": request.headers["Authorization"]}
    try:
        async with request.app[HTTP].post(url, json={"audience": body["audience"]}, headers=headers) as resp:
            answer = await resp.read()
    except (aiohttp.ClientError, TimeoutError) as exc:
        return error_response(503, f"no worker answered for the preview: {type(exc).__name__}")
    if resp.status not in (200, 400, 401, 403, 422, 503):
        return error_response(503, f"the worker answered {resp.status} for the preview")
    return web.Response(status=resp.status, body=answer, content_type="application/json")
