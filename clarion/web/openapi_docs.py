"""GET /docs: the OpenAPI description as one HTML page, rendered here from the document itself.

No script and nothing fetched from elsewhere (no CDN: the page works offline and under a strict
Content-Security-Policy): every operation with its parameters, body and answers, and every schema
with its fields, types and constraints, linked to each other.
"""

from __future__ import annotations

from html import escape
from typing import Any

MAX_ENUM_SHOWN = 12
CONSTRAINTS = ("pattern", "minLength", "maxLength", "minimum", "maximum", "minItems", "maxItems",
               "maxProperties", "format", "default")  # fmt: skip
STYLE = """
body { font: 15px/1.5 system-ui, sans-serif; margin: 0 auto; max-width: 1100px; padding: 1em 2em; color: #222; }
code, .path { font-family: ui-monospace, monospace; font-size: 90%; }
.op { border: 1px solid #ddd; border-radius: 6px; margin: 1em 0; padding: .5em 1em; }
.method { display: inline-block; min-width: 4.5em; font-weight: bold; text-transform: uppercase; }
.get { color: #1565c0; } .post { color: #2e7d32; } .head { color: #777; }
table { border-collapse: collapse; margin: .3em 0; } td, th { border-bottom: 1px solid #eee; padding: .2em .6em;
  text-align: left; vertical-align: top; }
.desc { white-space: pre-wrap; } .deprecated { text-decoration: line-through; } .muted { color: #777; }
"""


def render_docs(spec: dict[str, Any]) -> str:
    """The page for an OpenAPI 3.1 document as web/openapi.py builds it."""
    info = spec["info"]
    out = [f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{escape(info['title'])} API</title>",
           f"<style>{STYLE}</style></head><body>",
           f"<h1>{escape(info['title'])} API <span class=muted>{escape(info['version'])}</span></h1>",
           f"<p class=desc>{_text(info.get('description', ''))}</p>",
           '<p>Machine-readable: <a href="openapi.json"><code>openapi.json</code></a>.</p>']  # fmt: skip
    descriptions = {tag["name"]: tag.get("description", "") for tag in spec.get("tags", [])}
    by_tag: dict[str, list[tuple[str, str, dict[str, Any]]]] = {tag: [] for tag in descriptions}
    for path, methods in spec["paths"].items():
        for method, op in methods.items():
            by_tag.setdefault(op.get("tags", ["other"])[0], []).append((method, path, op))
    by_tag = {tag: ops for tag, ops in by_tag.items() if ops}
    out.append("<nav><ul>")
    out += [f'<li><a href="#tag-{escape(tag)}">{escape(tag)}</a>: {_text(descriptions.get(tag, ""))}</li>'
            for tag in by_tag]  # fmt: skip
    out.append('<li><a href="#schemas">schemas</a></li></ul></nav>')
    for tag, ops in by_tag.items():
        out.append(f'<h2 id="tag-{escape(tag)}">{escape(tag)}</h2>')
        out += [_operation(method, path, op) for method, path, op in ops]
    out.append('<h2 id="schemas">Schemas</h2>')
    out += [_component(name, schema) for name, schema in spec["components"]["schemas"].items()]
    out.append("</body></html>")
    return "\n".join(out)


def _operation(method: str, path: str, op: dict[str, Any]) -> str:
    anchor = escape(op.get("operationId", f"{method}{path}"))
    if method == "head":  # as GET, without the body
        return (f'<p id="op-{anchor}" class=muted><span class="method head">head</span> <span class=path>'
                f"{escape(path)}</span>: the same answers as GET, headers only.</p>")
    out = [f'<section class=op id="op-{anchor}"><h3><span class="method {escape(method)}">{escape(method)}</span> '
           f'<span class=path>{escape(path)}</span> — {escape(op.get("summary", ""))}</h3>',
           f"<p class=desc>{_text(op.get('description', ''))}</p>"]  # fmt: skip
    if params := op.get("parameters"):
        out.append("<table><tr><th>parameter</th><th>in</th><th>type</th><th></th></tr>")
        out += [f"<tr><td><code>{escape(p['name'])}</code>{' *' if p.get('required') else ''}</td>"
                f"<td>{escape(p['in'])}</td><td>{_type(p.get('schema', {}))}</td>"
                f"<td>{_text(p.get('description', ''))}</td></tr>" for p in params]  # fmt: skip
        out.append("</table>")
    if body := op.get("requestBody"):
        out += [f"<p>Body, <code>{escape(media)}</code>: {_type(entry.get('schema', {}))}</p>"
                for media, entry in body.get("content", {}).items()]  # fmt: skip
    out.append("<table><tr><th>answer</th><th></th><th>body</th></tr>")
    for status, answer in op.get("responses", {}).items():
        bodies = ", ".join(f"{_type(entry.get('schema', {}))} <span class=muted>{escape(media)}</span>"
                           for media, entry in answer.get("content", {}).items())  # fmt: skip
        text = _text(answer.get("description", ""))
        out.append(f"<tr><td>{escape(status)}</td><td>{text}</td><td>{bodies}</td></tr>")
    out.append("</table></section>")
    return "\n".join(out)


def _component(name: str, schema: dict[str, Any]) -> str:
    out = [f'<section class=op id="schema-{escape(name)}"><h3>{escape(name)}</h3>',
           f"<p class=desc>{_text(schema.get('description', ''))}</p>"]  # fmt: skip
    properties = schema.get("properties", {})
    required = set(schema.get("required", ()))
    if properties:
        out.append("<table><tr><th>field</th><th>type</th><th>description</th></tr>")
        for field, sub in properties.items():
            css = " class=deprecated" if sub.get("deprecated") else ""
            out.append(f"<tr><td{css}><code>{escape(field)}</code>{' *' if field in required else ''}</td>"
                       f"<td>{_type(sub)}</td><td>{_text(sub.get('description', ''))}</td></tr>")  # fmt: skip
        out.append("</table>")
    if schema.get("additionalProperties") is False:
        out.append("<p class=muted>No other fields.</p>")
    for keyword in ("anyOf", "oneOf", "allOf"):
        if keyword in schema:
            out.append(f"<p class=muted>Also: {escape(keyword)} (see openapi.json).</p>")
    out.append("</section>")
    return "\n".join(out)


def _type(schema: dict[str, Any]) -> str:
    """A schema in a few words, with links to the components it names."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return f'<a href="#schema-{escape(name)}">{escape(name)}</a>'
    for keyword in ("anyOf", "oneOf"):
        if keyword in schema:
            return " | ".join(_type(sub) for sub in schema[keyword])
    if "enum" in schema:
        values = schema["enum"]
        shown = ", ".join(f"<code>{escape(str(v))}</code>" for v in values[:MAX_ENUM_SHOWN])
        more = f" … {len(values) - MAX_ENUM_SHOWN} more" if len(values) > MAX_ENUM_SHOWN else ""
        return f"one of {shown}{more}"
    if "const" in schema:
        return f"<code>{escape(str(schema['const']))}</code>"
    kind = schema.get("type", "any")
    text = escape(kind if isinstance(kind, str) else " | ".join(kind))
    if kind == "array" and "items" in schema:
        text = f"array of {_type(schema['items'])}"
    elif kind == "object" and isinstance(schema.get("additionalProperties"), dict):
        text = f"object of {_type(schema['additionalProperties'])}"
    if names := schema.get("propertyNames"):
        text += f" (names: {_constraints(names)})"
    if constraints := _constraints(schema):
        text += f" <span class=muted>{constraints}</span>"
    return text


def _constraints(schema: dict[str, Any]) -> str:
    return ", ".join(f"{key} <code>{escape(str(schema[key]))}</code>" for key in CONSTRAINTS if key in schema)


def _text(text: str) -> str:
    """Escaped text, with `code` spans."""
    parts = escape(text).split("`")
    return "".join(f"<code>{part}</code>" if i % 2 else part for i, part in enumerate(parts))
