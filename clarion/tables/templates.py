"""Template versions: compile-checking, rendering, and lookup of the latest version.

Templates are rendered in a Jinja2 sandbox (user-supplied templates must not reach
Python internals) with StrictUndefined, so a missing parameter fails the delivery with
a clear reason instead of sending "Hello ," to a user. HTML parts are autoescaped.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from clarion.schemas.records import TemplateVersion
from clarion.schemas.validation import TEMPLATE_PARTS, ValidationFailed

_PLAIN = SandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False)
_HTML = SandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=True)

CHANNEL_PARTS = {
    "email": ("email_subject", "email_text", "email_html"),
    "apns": ("push_title", "push_body"),
    "fcm": ("push_title", "push_body"),
    "sms": ("sms_body",),
}


class RenderError(ValueError):
    """A template that cannot render with the given params (a permanent failure)."""


@dataclass(frozen=True)
class Rendered:
    """The rendered parts of one message; which are set depends on the channel."""

    subject: str | None = None
    text: str | None = None
    html: str | None = None
    title: str | None = None
    body: str | None = None


@lru_cache(maxsize=4096)
def _compile(part: str, source: str) -> jinja2.Template:
    env = _HTML if part == "email_html" else _PLAIN
    return env.from_string(source)


def check_template(template: TemplateVersion) -> None:
    """Compile every part; raise ValidationFailed naming each broken part."""
    errors = []
    for part in TEMPLATE_PARTS:
        source = getattr(template, part)
        if source is None:
            continue
        try:
            _compile(part, source)
        except jinja2.TemplateSyntaxError as exc:
            errors.append({"field": part, "error": f"Jinja2 syntax error line {exc.lineno}: {exc.message}"})
    if errors:
        raise ValidationFailed(errors)


def render(template: TemplateVersion, channel: str, params: Mapping[str, Any]) -> Rendered:
    """Render the parts `channel` needs; RenderError when the template lacks them or fails."""
    if channel not in template.channels():
        raise RenderError(f"template {template.key} has no content for channel {channel}")
    out: dict[str, str] = {}
    for part in CHANNEL_PARTS[channel]:
        source = getattr(template, part)
        if source is None:
            continue
        try:
            out[part] = _compile(part, source).render(**params)
        except jinja2.TemplateError as exc:
            raise RenderError(f"{part}: {exc.message or exc}") from None
    return Rendered(
        subject=out.get("email_subject"),
        text=out.get("email_text"),
        html=out.get("email_html"),
        title=out.get("push_title"),
        body=out.get("push_body") or out.get("sms_body"),
    )


def latest_key(template_id: str) -> str:
    """Table key holding the highest version number of a template."""
    return f"{template_id}@latest"


def resolve(table: Mapping[str, Any], template_id: str, version: int | None) -> TemplateVersion | None:
    """Find a template version in a templates table (or any mapping of the same shape)."""
    if version is None:
        version = table.get(latest_key(template_id))
        if version is None:
            return None
    value = table.get(f"{template_id}@{version}")
    if value is None:
        return None
    return value if isinstance(value, TemplateVersion) else TemplateVersion(**value)
