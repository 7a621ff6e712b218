"""Template compile checks and sandboxed rendering."""

from __future__ import annotations

import pytest

from clarion.schemas import TemplateVersion
from clarion.schemas.records import asdict
from clarion.schemas.validation import ValidationFailed
from clarion.tables.templates import RenderError, check_template, render, resolve

T = TemplateVersion(
    template_id="w",
    version=1,
    email_subject="Hi {{ name }}",
    email_text="Hello {{ name }}",
    email_html="<p>{{ name }}</p>",
    push_title="T {{ name }}",
    push_body="B {{ name }}",
    sms_body="S {{ name }}",
)


def test_renders_each_channel() -> None:
    email = render(T, "email", {"name": "Ann"})
    assert (email.subject, email.text, email.html) == ("Hi Ann", "Hello Ann", "<p>Ann</p>")
    assert (render(T, "apns", {"name": "A"}).title, render(T, "fcm", {"name": "A"}).body) == ("T A", "B A")
    assert render(T, "sms", {"name": "Ann"}).body == "S Ann"


def test_html_is_autoescaped_but_text_is_not() -> None:
    email = render(T, "email", {"name": "<script>"})
    assert email.html == "<p>&lt;script&gt;</p>"
    assert email.text == "Hello <script>"


def test_missing_param_is_a_render_error() -> None:
    with pytest.raises(RenderError, match="'name' is undefined"):
        render(T, "sms", {})


def test_sandbox_blocks_python_internals() -> None:
    evil = TemplateVersion(template_id="e", version=1, sms_body="{{ x.__class__.__mro__[1].__subclasses__() }}")
    with pytest.raises(RenderError, match="unsafe"):
        render(evil, "sms", {"x": 1})


def test_channel_without_content() -> None:
    with pytest.raises(RenderError, match="no content for channel email"):
        render(TemplateVersion(template_id="s", version=1, sms_body="x"), "email", {})


def test_broken_jinja_is_rejected_per_part() -> None:
    broken = TemplateVersion(template_id="b", version=1, email_subject="{{ x", email_text="ok", sms_body="{% if %}")
    with pytest.raises(ValidationFailed) as info:
        check_template(broken)
    assert {e["field"] for e in info.value.errors} == {"email_subject", "sms_body"}


def test_resolve_latest_and_pinned_versions() -> None:
    table = {"w@1": asdict(T), "w@2": {**asdict(T), "version": 2, "sms_body": "v2"}, "w@latest": 2}
    assert resolve(table, "w", None).version == 2
    assert resolve(table, "w", 1).sms_body == "S {{ name }}"
    assert resolve(table, "w", 3) is None
    assert resolve(table, "other", None) is None
