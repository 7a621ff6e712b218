"""Template versions: compile-checking, rendering, and lookup of the latest version.

Templates are rendered in a Jinja2 sandbox (user-supplied templates must not reach
Python internals, nor take more than a bounded share of memory and time: see
sandbox.py) with StrictUndefined, so a missing parameter fails the delivery with a clear
reason instead of sending "Hello ," to a user. HTML parts are autoescaped.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import jinja2

from clarion.schemas.channels import REGISTRY
from clarion.schemas.records import TemplateVersion, scoped
from clarion.schemas.validation import SOURCE_MAX, TEMPLATE_PARTS, VERSION_MAX, ValidationFailed
from clarion.tables.sandbox import DEADLINE, LimitedSandbox, LimitExceeded, render_bounded

_PLAIN = LimitedSandbox(autoescape=False)
_HTML = LimitedSandbox(autoescape=True)

COMPILE_BUDGET_S = 0.5
RENDER_BUDGET_S = 0.05  # for all the parts of one message
OUTPUT_MAX = 128 * 1024  # characters a rendered part may have
HEADER_PARTS = ("email_subject", "push_title")  # one line each: CR/LF would inject headers
HEADER_MAX = 1024

CHANNEL_PARTS = {name: spec.parts for name, spec in REGISTRY.items()}


class RenderError(ValueError):
    """A template that cannot render with the given params (a permanent failure)."""

    reason = "render_error"


class RenderLimit(RenderError):
    """A template that went over a size, work or time limit while rendering."""

    reason = "render_limit"


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
    """Check sizes and compile every part under a time budget; ValidationFailed names each broken part."""
    errors = []
    if template.version > VERSION_MAX:
        errors.append({"field": "version", "error": f"must be at most {VERSION_MAX}"})
    for part in TEMPLATE_PARTS:
        source = getattr(template, part)
        if source is None:
            continue
        if len(source) > SOURCE_MAX:
            errors.append({"field": part, "error": f"is over {SOURCE_MAX} characters"})
            continue
        try:
            with DEADLINE.within(COMPILE_BUDGET_S):
                _compile(part, source)
        except jinja2.TemplateSyntaxError as exc:
            errors.append({"field": part, "error": f"Jinja2 syntax error line {exc.lineno}: {exc.message}"})
        except LimitExceeded as exc:
            errors.append({"field": part, "error": f"template_limit: {exc}"})
        except Exception as exc:  # the compiler on hostile input: deep nesting, odd literals
            errors.append({"field": part, "error": f"cannot compile: {type(exc).__name__}: {exc}"[:300]})
    if errors:
        raise ValidationFailed(errors)


def render(template: TemplateVersion, channel: str, params: Mapping[str, Any]) -> Rendered:
    """Render the parts `channel` needs within the budget; RenderError (or RenderLimit) when it cannot."""
    if channel not in template.channels():
        raise RenderError(f"template {template.ref} has no content for channel {channel}")
    out: dict[str, str] = {}
    values = dict(params)  # passed as a mapping: a param named "self" is just a param
    try:
        with DEADLINE.within(RENDER_BUDGET_S):
            for part in CHANNEL_PARTS[channel]:
                source = getattr(template, part)
                if source is not None:
                    out[part] = _render_part(part, source, values)
    except LimitExceeded as exc:  # the timer fired between parts
        raise RenderLimit(str(exc)) from None
    return Rendered(
        subject=out.get("email_subject"),
        text=out.get("email_text"),
        html=out.get("email_html"),
        title=out.get("push_title"),
        body=out.get("push_body") or out.get("sms_body"),
    )


def _render_part(part: str, source: str, values: dict[str, Any]) -> str:
    header = part in HEADER_PARTS
    try:
        text = render_bounded(_compile(part, source), values, HEADER_MAX if header else OUTPUT_MAX)
    except LimitExceeded as exc:
        raise RenderLimit(f"{part}: {exc}") from None
    except jinja2.TemplateError as exc:
        raise RenderError(f"{part}: {exc.message or exc}") from None
    except Exception as exc:  # 1/0, int('x'), huge int to str...: the template's fault, not ours
        raise RenderError(f"{part}: {type(exc).__name__}: {exc}"[:300]) from None
    return text.replace("\r", " ").replace("\n", " ") if header else text


def latest_key(client_id: str, template_id: str) -> str:
    """Table key holding the highest version number of a client's template."""
    return scoped(client_id, f"{template_id}@latest")


def resolve(
    table: Mapping[str, Any], client_id: str, template_id: str, version: int | None
) -> TemplateVersion | None:
    """Find a client's template version in a templates view (or any mapping of the same shape)."""
    if version is None:
        version = table.get(latest_key(client_id, template_id))
        if version is None:
            return None
    value = table.get(scoped(client_id, f"{template_id}@{version}"))
    if value is None:
        return None
    return value if isinstance(value, TemplateVersion) else TemplateVersion(**value)
