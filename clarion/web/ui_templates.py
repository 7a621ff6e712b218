"""The dashboard's template panel: the caller's templates, their sources, and a render preview.

Scope `templates`. Everything comes from this API process's templates view (every version
of every template, tailed from the templates topic), and a preview is rendered with the
caller's params by the same bounded render a delivery uses (tables/templates.py): its time,
work and output are limited, and a template that does not render answers 422 with why.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from clarion.schemas.records import TemplateVersion, asdict, scoped
from clarion.tables.api_keys import Caller
from clarion.tables.templates import CHANNEL_PARTS, RenderError, render, resolve
from clarion.web.context import CALLER, TEMPLATES, Rejected, error_response, json_response, read_body, requires

MAX_TEMPLATES = 500  # listed at once
_PARTS = {part for parts in CHANNEL_PARTS.values() for part in parts}


def _caller(request: web.Request) -> Caller:
    return request[CALLER]


def _templates_of(request: web.Request, client_id: str) -> dict[str, dict[str, Any]]:
    prefix = scoped(client_id, "")
    found: dict[str, dict[str, Any]] = {}
    for key in list(request.app[TEMPLATES]):
        if not key.startswith(prefix):
            continue
        template_id, _, version = key[len(prefix):].rpartition("@")
        if version.isdigit():
            found.setdefault(template_id, {"template_id": template_id, "versions": []})["versions"].append(int(version))
    return found


@requires("templates")
async def get_templates(request: web.Request) -> web.Response:
    found = _templates_of(request, _caller(request).client_id)
    rows = []
    for template_id in sorted(found)[:MAX_TEMPLATES]:
        row = found[template_id]
        row["versions"].sort()
        latest = resolve(request.app[TEMPLATES], _caller(request).client_id, template_id, None)
        rows.append({**row, "latest": row["versions"][-1], "channels": latest.channels() if latest else []})
    return json_response(200, {"templates": rows, "more": len(found) > MAX_TEMPLATES})


def _template(request: web.Request, template_id: Any, version: Any) -> TemplateVersion:
    if not isinstance(template_id, str) or not (version is None or isinstance(version, int)):
        raise Rejected(400, "template_id must be a string, version a number or null", "template_id")
    template = resolve(request.app[TEMPLATES], _caller(request).client_id, template_id, version)
    if template is None:
        raise Rejected(404, f"unknown template {template_id[:100]}@{version or 'latest'}", "template_id")
    return template


@requires("templates")
async def get_template(request: web.Request) -> web.Response:
    text = request.match_info["version"]
    version = None if text == "latest" else int(text) if text.isdigit() and len(text) <= 9 else -1
    template = _template(request, request.match_info["template_id"], version)
    parts = {part: value for part, value in asdict(template).items() if part in _PARTS and value is not None}
    return json_response(200, {"template_id": template.template_id, "version": template.version,
                               "channels": template.channels(), "critical_override": template.critical_override,
                               "parts": parts})  # fmt: skip


@requires("templates")
async def post_template_preview(request: web.Request) -> web.Response:
    """Render a template of the caller's for one channel with the given params (the bounded render)."""
    body = await read_body(request)
    if not isinstance(body, dict):
        raise Rejected(400, "must be a JSON object", "body")
    template = _template(request, body.get("template_id"), body.get("version"))
    channel, params = body.get("channel"), body.get("params", {})
    if channel not in CHANNEL_PARTS:
        raise Rejected(400, f"must be one of {', '.join(CHANNEL_PARTS)}", "channel")
    if not isinstance(params, dict):
        raise Rejected(400, "must be a JSON object", "params")
    try:
        rendered = render(template, channel, params)
    except RenderError as exc:
        return error_response(422, f"does not render: {exc}", "params")
    except Exception as exc:  # {{ 1/0 }} and the like: the template and params are at fault, as at POST /notif
        return error_response(422, f"does not render: {type(exc).__name__}: {exc}"[:500], "params")
    out = {name: getattr(rendered, name) for name in ("subject", "text", "html", "title", "body")}
    return json_response(200, {"template": template.ref, "channel": channel,
                               "rendered": {k: v for k, v in out.items() if v is not None}})  # fmt: skip


ROUTES = [
    web.get("/ui/api/templates", get_templates),
    web.get("/ui/api/templates/{template_id}/{version}", get_template),
    web.post("/ui/api/templates/preview", post_template_preview),
]
