"""The API's OpenAPI 3.1 description, generated, at GET /openapi.json, and a page of it at GET /docs.

Both are public, like /healthz: a description says how to call the API and nothing about anyone's data,
and clients, code generators and gateways need it before they hold a key.

Nothing in it is written twice. The component schemas come from the request and response Structs
(schemas/requests.py, schemas/responses.py) through `msgspec.json.schema_components`; the request
Structs are built from the patterns and limits the hand-written validators use, and
tests/test_openapi_schema.py proves that validators and schema agree. The paths come from the routes
the application registered (`app.router.routes()`), each described by its entry in web/openapi_ops.py,
and each route's security from its handler's own mark (@requires(scope) or @public), the one the auth
middleware obeys. A route without an entry still appears, marked `x-undocumented` (the test fails on
it). The description is built on the first request, when every route is registered, and kept.
"""

from __future__ import annotations

import inspect
from typing import Any

import msgspec
import msgspec.inspect
import orjson
from aiohttp import web

from clarion.schemas import responses
from clarion.schemas.requests import Beyond
from clarion.topology.settings import Settings
from clarion.web import users_bulk, webhooks
from clarion.web.context import SETTINGS, public
from clarion.web.openapi_docs import render_docs
from clarion.web.openapi_ops import OPERATIONS, PATH_PARAMS, Content, Op, Param
from clarion.web.ui import FILES

OPENAPI = web.AppKey("openapi", dict)  # "json" and "html", once built
REF = "#/components/schemas/{name}"
ERROR_REF = {"$ref": REF.format(name="Error")}
TAGS = {
    "notifications": "Critical notifications: send them, one or a batch, and follow their status.",
    "templates": "Jinja2 templates, one immutable version at a time, rendered in a sandbox.",
    "users": "The key's client's users: addresses, preferences, attributes and tags.",
    "campaigns": "Promotional campaigns to audiences of users, on lanes of their own.",
    "webhooks": "Provider feedback, authenticated by the provider's signature instead of an API key.",
    "operations": "Health, readiness, metrics and this description.",
    "dashboard": "The live dashboard at /ui and the JSON it reads.",
}
ABOUT = """Clarion's HTTP API: stateless, it validates a request and puts it on Kafka.

Every endpoint but the public ones (security: none) needs `Authorization: Bearer <API key>` with the
endpoint's scope (`x-scope`); the key names the client, so a body may leave `client_id` out.
Every error is JSON: `{"error": ..., "errors": [{"field", "error"}]}` (Error), 404 and 405 included.

The schemas are generated from the models the API's checks are built from. What JSON Schema cannot
say is listed with each operation under "Checked beyond the schema" (`x-beyond-schema`: the field a
refusal names, its status, the rule). Request bodies are JSON read by orjson: integers beyond 64 bits
are read as floats and compressed bodies are refused (415)."""
COMMON_ERRORS = {
    400: "A field is wrong: each one is named in errors",
    401: "No API key, or not a valid one",
    415: "A compressed body (Content-Encoding): send it uncompressed",
}


def build_spec(app: web.Application) -> dict[str, Any]:
    """The OpenAPI document for every route `app` has registered."""
    settings: Settings = app[SETTINGS]
    routes = [(r.method, r.resource.canonical, r.handler) for r in app.router.routes() if r.resource is not None]
    described = {(method, path): _op_of(method, path, handler) for method, path, handler in routes}
    structs = sorted(_structs(op for op in described.values() if op is not None), key=lambda s: s.__name__)
    _, components = msgspec.json.schema_components(structs, ref_template=REF)
    for struct in _all_structs(structs):
        _finish(components, struct)
    if "NotificationBatchBody" in components:  # the one limit a setting moves
        components["NotificationBatchBody"]["properties"]["notifications"]["maxItems"] = settings.max_batch_items
    paths: dict[str, dict[str, Any]] = {}
    for method, path, handler in routes:
        op = described[(method, path)]
        entry = _operation(method, path, handler, op, settings) if op else _undocumented(method, path, handler)
        paths.setdefault(path, {})[method.lower()] = entry
    return {
        "openapi": "3.1.0",
        "info": {"title": "clarion", "version": _version(), "description": ABOUT},
        "tags": [{"name": name, "description": text} for name, text in TAGS.items()],
        "paths": {path: dict(sorted(ops.items(), key=_head_last)) for path, ops in sorted(paths.items())},
        "components": {
            "schemas": dict(sorted(components.items())),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description":
                                           "An API key, clk_<id>_<secret>, from `clarion keys create`"}},
        },
    }


def _head_last(item: tuple[str, Any]) -> bool:
    return item[0] == "head"


def _op_of(method: str, path: str, handler: Any) -> Op | None:
    method = "GET" if method == "HEAD" else method
    if (method, path) in OPERATIONS:
        return OPERATIONS[(method, path)]
    if getattr(handler, "__module__", "") == "clarion.web.ui" and handler.__name__ == "get_static":
        name, media_type = FILES[path]  # the dashboard's files: however many it has
        return Op(f"The dashboard's {name}", "dashboard", None, {200: (media_type, {media_type: {"type": "string"}})})
    return None


def _structs(ops: Any) -> set[type[msgspec.Struct]]:
    found: set[type[msgspec.Struct]] = {responses.Error}
    for op in ops:
        for content in (op.body, *(content for _, content in op.answers.values())):
            if isinstance(content, type):
                found.add(content)
    return found


def _all_structs(roots: list[type[msgspec.Struct]]) -> set[type[msgspec.Struct]]:
    """The Structs `roots` name, and those they name in turn (each is a component)."""
    seen: set[type[msgspec.Struct]] = set()

    def visit(info: Any) -> None:
        if isinstance(info, msgspec.inspect.StructType):
            if info.cls in seen:
                return
            seen.add(info.cls)
            for f in info.fields:
                visit(f.type)
        for name in ("type", "item_type", "key_type", "value_type", "types", "item_types"):
            value = getattr(info, name, None)
            for each in value if isinstance(value, tuple) else (value,) if value is not None else ():
                visit(each)

    for info in msgspec.inspect.multi_type_info(roots):
        visit(info)
    return seen


def _finish(components: dict[str, Any], struct: type[msgspec.Struct]) -> None:
    """A component as msgspec made it, with its docstring tidied and the keywords the Struct adds."""
    component = components.get(struct.__name__)
    if component is None:
        return
    if "description" in component:
        component["description"] = inspect.cleandoc(component["description"])
    extra = getattr(struct, "extra_schema", None)
    if extra is not None:
        component.update(extra(component))


def _content(content: Content) -> dict[str, Any] | None:
    if content is None:
        return None
    if isinstance(content, type):
        return {"application/json": {"schema": {"$ref": REF.format(name=content.__name__)}}}
    return {media: {"schema": schema} for media, schema in content.items()}


def _answer(description: str, content: Content, head: bool) -> dict[str, Any]:
    answer: dict[str, Any] = {"description": description or "OK"}
    if not head and (body := _content(content)) is not None:
        answer["content"] = body
    return answer


def _error(description: str, head: bool) -> dict[str, Any]:
    answer: dict[str, Any] = {"description": description}
    if not head:
        answer["content"] = {"application/json": {"schema": ERROR_REF}}
    return answer


def _operation(method: str, path: str, handler: Any, op: Op, settings: Settings) -> dict[str, Any]:
    head = method == "HEAD"
    scope = getattr(handler, "scope", None)
    public_route = getattr(handler, "public", False)
    errors: dict[int, str] = {}
    if op.body is not None:
        errors |= {400: COMMON_ERRORS[400], 413: f"The body is over {_limit(path, settings)}",
                   415: COMMON_ERRORS[415]}  # fmt: skip
    if not public_route:
        errors |= {401: COMMON_ERRORS[401],
                   403: f"The key lacks the `{scope}` scope" + (", or the body names another client_id"
                                                                 if op.body is not None else "")}  # fmt: skip
    errors |= op.errors
    answers = {str(status): _error(text, head) for status, text in errors.items()}
    answers |= {str(status): _answer(text, content, head) for status, (text, content) in op.answers.items()}
    beyond = [*op.beyond, *getattr(op.body, "beyond", ())] if isinstance(op.body, type) else list(op.beyond)
    entry: dict[str, Any] = {
        "operationId": _operation_id(method, path),
        "summary": op.summary + (" (headers only)" if head else ""),
        "tags": [op.tag],
        "description": _description(op, scope, public_route, beyond),
        "security": [] if public_route else [{"bearer": []}],
        "responses": dict(sorted(answers.items())),
    }
    if scope:
        entry["x-scope"] = scope
    if beyond:
        entry["x-beyond-schema"] = [rule._asdict() for rule in beyond]
    params = [PATH_PARAMS[name] for name in _path_names(path)] + list(op.params)
    if params:
        entry["parameters"] = [_param(p) for p in params]
    if op.body is not None and (body := _content(op.body)) is not None:
        entry["requestBody"] = {"required": True, "content": body}
    return entry


def _undocumented(method: str, path: str, handler: Any) -> dict[str, Any]:
    """A route web/openapi_ops.py does not describe: its security and errors, and a mark the test fails on."""
    op = Op(inspect.getdoc(handler) or f"{method} {path}", "undocumented", None, {})
    entry = _operation(method, path, handler, op, Settings())
    entry["responses"]["default"] = _error("Not described yet", method == "HEAD")
    entry["x-undocumented"] = True
    return entry


def _description(op: Op, scope: str | None, public_route: bool, beyond: list[Beyond]) -> str:
    lines = [op.description] if op.description else []
    lines.append("Public: no API key." if public_route else f"Needs an API key with the `{scope}` scope.")
    if beyond:
        lines.append("\nChecked beyond the schema:")
        lines += [f"- `{rule.field}` ({rule.status}): {rule.rule}" for rule in beyond]
    return "\n".join(lines)


def _param(param: Param) -> dict[str, Any]:
    out: dict[str, Any] = {"name": param.name, "in": param.where, "required": param.required, "schema": param.schema}
    if param.description:
        out["description"] = param.description
    return out


def _path_names(path: str) -> list[str]:
    return [part[1:-1] for part in path.split("/") if part.startswith("{") and part.endswith("}")]


def _operation_id(method: str, path: str) -> str:
    words = [part.strip("{}").replace(".", "_") for part in path.split("/") if part]
    return "_".join([method.lower(), *words]) if words else method.lower()


def _limit(path: str, settings: Settings) -> str:
    limits = {"/notif/batch": settings.max_batch_request_bytes, "/users/bulk": users_bulk.MAX_BODY_BYTES,
              "/webhooks/twilio": webhooks.MAX_TWILIO_BYTES, "/webhooks/ses": webhooks.MAX_SNS_BYTES}  # fmt: skip
    return f"{limits.get(path, settings.max_request_bytes)} bytes"


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("clarion")
    except PackageNotFoundError:
        return "0"


def _built(app: web.Application) -> dict[str, Any]:
    cache = app[OPENAPI]
    if not cache:
        spec = build_spec(app)
        cache["json"] = orjson.dumps(spec)
        cache["html"] = render_docs(spec)
    return cache


@public
async def get_openapi(request: web.Request) -> web.Response:
    """This API's OpenAPI 3.1 description."""
    return web.Response(body=_built(request.app)["json"], content_type="application/json")


@public
async def get_docs(request: web.Request) -> web.Response:
    """The description as one self-contained HTML page (no script, nothing fetched from elsewhere)."""
    headers = {"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'", "Cache-Control": "no-cache"}
    return web.Response(text=_built(request.app)["html"], content_type="text/html", headers=headers)


def install_openapi(app: web.Application) -> None:
    """Add GET /openapi.json and GET /docs (the description is built on the first request)."""
    app[OPENAPI] = {}
    app.add_routes([web.get("/openapi.json", get_openapi), web.get("/docs", get_docs)])
