"""The live dashboard at /ui: a static page (HTML, CSS, a little vanilla JS; no build step, nothing
fetched from elsewhere) that asks for an API key, keeps it in the tab's sessionStorage and
polls the JSON endpoints of web/ui_data.py with `Authorization: Bearer`. The page itself
holds no data and is public; every endpoint it calls needs the key and shows only the
key's client's data.

Panels: lanes (outcomes per lane, channel and status, rates between polls, accepted->sent
latency), recent outcomes with filters, dead letters (replay, or the CLI command), campaigns
with progress, templates with a render preview, and read-only tables: a status, a campaign,
users (masked) and suppressed addresses (masked).
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from aiohttp import web

from clarion.web import ui_templates
from clarion.web.context import SETTINGS, public
from clarion.web.ui_data import FEEDS, ROUTES, Feeds

FILES = {  # path -> (file under clarion/web/static, content type)
    "/ui": ("index.html", "text/html"),
    "/ui/app.js": ("app.js", "application/javascript"),
    "/ui/app.css": ("app.css", "text/css"),
    "/ui/favicon.svg": ("favicon.svg", "image/svg+xml"),
}
HEADERS = {
    # Only this page's own files, no inline script or style, never framed.
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


@cache
def static_file(name: str) -> bytes:
    return resources.files("clarion.web").joinpath("static", name).read_bytes()


@public
async def get_static(request: web.Request) -> web.Response:
    """The page and its script and style sheet: public, they hold no data."""
    name, content_type = FILES[request.path]
    return web.Response(body=static_file(name), content_type=content_type, charset="utf-8", headers=HEADERS)


@public
async def get_ui_slash(request: web.Request) -> web.Response:
    raise web.HTTPFound("/ui")


def install_ui(app: web.Application) -> None:
    """Add the dashboard's routes; the topics it shows are followed only while a dashboard asks."""
    app.add_routes([web.get(path, get_static) for path in FILES])
    app.add_routes([web.get("/ui/", get_ui_slash), *ROUTES, *ui_templates.ROUTES])
    app[FEEDS] = Feeds(app[SETTINGS])

    async def close_feeds(app: web.Application) -> None:
        await app[FEEDS].close()

    app.on_cleanup.append(close_feeds)
