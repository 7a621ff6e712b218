"""Template compile checks and sandboxed rendering."""

from __future__ import annotations

from functools import partial

import pytest

from clarion.schemas import TemplateVersion
from clarion.schemas.records import asdict
from clarion.schemas.validation import ValidationFailed
from clarion.tables.templates import RenderError, check_template, render, resolve

tv = partial(TemplateVersion, client_id="c")
T = tv(
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
    evil = tv(template_id="e", version=1, sms_body="{{ x.__class__.__mro__[1].__subclasses__() }}")
    with pytest.raises(RenderError, match="unsafe"):
        render(evil, "sms", {"x": 1})


def test_channel_without_content() -> None:
    with pytest.raises(RenderError, match="no content for channel email"):
        render(tv(template_id="s", version=1, sms_body="x"), "email", {})


def test_broken_jinja_is_rejected_per_part() -> None:
    broken = tv(template_id="b", version=1, email_subject="{{ x", email_text="ok", sms_body="{% if %}")
    with pytest.raises(ValidationFailed) as info:
        check_template(broken)
    assert {e["field"] for e in info.value.errors} == {"email_subject", "sms_body"}


def test_resolve_latest_and_pinned_versions() -> None:
    table = {"c/w@1": asdict(T), "c/w@2": {**asdict(T), "version": 2, "sms_body": "v2"}, "c/w@latest": 2}
    assert resolve(table, "c", "w", None).version == 2
    assert resolve(table, "c", "w", 1).sms_body == "S {{ name }}"
    assert resolve(table, "c", "w", 3) is None
    assert resolve(table, "c", "other", None) is None
    assert resolve(table, "d", "w", None) is None and resolve(table, "d", "w", 1) is None  # another client's


HOSTILE = {
    "compile-time power": ("{{ 9**(9**9) }}", "** with an exponent"),
    "huge integer": ("{{ 10**5000 }}", "** with an exponent"),
    "string repetition": ("{{ 'x'*10**8 }}", "would make"),
    "nested ranges": ("{% for a in range(99999) %}{% for b in range(99999) %}x{% endfor %}{% endfor %}", ""),
    "a CPU loop": ("{% for a in range(10000) %}{% for b in range(10000) %}{% endfor %}{% endfor %}", "time budget"),
    "lipsum": ("{{ lipsum(100000) }}", ""),
    "wide filter": ("{{ 'x'|center(100000000) }}", "filter center"),
    "wide method": ("{{ 'x'.ljust(100000000) }}", "call given"),
    "wide % format": ("{{ '%0100000000d' % 1 }}", "format width"),
    "wide str.format": ("{{ '{:100000000}'.format(1) }}", "format width"),
    "exploding replace": ("{% set s = 'a'*60000 %}{{ s|replace('a', 'bbbbbbbbbb') }}", "replace"),
    "long output": ("{% for a in range(9000) %}{{ p }}{% endfor %}", "output over"),
}


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_templates_end_in_render_limit_within_the_budget(name: str) -> None:
    source, reason = HOSTILE[name]
    template = tv(template_id="h", version=1, sms_body=source)
    with pytest.raises(RenderError) as info:
        render(template, "sms", {"p": "y" * 100})
    assert info.value.reason == "render_limit" and reason in str(info.value)  # the bound stopped it, not the end


def test_template_errors_at_render_are_render_errors_not_crashes() -> None:
    for source, reason in (("{{ 1/0 }}", "ZeroDivisionError"), ("{{ x + 1 }}", "TypeError")):
        with pytest.raises(RenderError, match=reason) as info:
            render(tv(template_id="e", version=1, sms_body=source), "sms", {"x": "9"})
        assert info.value.reason == "render_error"


def test_upload_rejects_oversized_or_uncompilable_parts() -> None:
    cases = [
        (tv(template_id="u", version=10**6 + 1, sms_body="x"), {"version"}),
        (tv(template_id="u", version=1, sms_body="x" * (16 * 1024 + 1)), {"sms_body"}),
        (
            tv(template_id="u", version=1, sms_body="{{ " + "(" * 500 + "1" + ")" * 500 + " }}"),
            {"sms_body"},
        ),
        (tv(template_id="u", version=1, email_subject="s", email_html="{{ p|safe }}"), {"email_html"}),
    ]
    for template, fields in cases:
        with pytest.raises(ValidationFailed) as info:
            check_template(template)
        assert {e["field"] for e in info.value.errors} == fields


def test_header_parts_lose_cr_lf_and_any_param_name_works() -> None:
    template = tv(template_id="h", version=1, email_subject="Hello {{ name }}", email_text="{{ name }}")
    email = render(template, "email", {"name": "Bob\r\nBcc: victim@example.com", "self": "me"})  # "self": a 500 before
    assert email.subject == "Hello Bob  Bcc: victim@example.com" and email.text.startswith("Bob\r\n")
