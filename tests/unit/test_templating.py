"""Rendering templates: escaping, strict variables, and the bounds that keep a render from running away."""

from __future__ import annotations

import pytest
from mailqueue.html_text import html_to_text
from mailqueue.templates import InvalidTemplate, TemplateDataError
from mailqueue.templating import MAX_OUTPUT_CHARS, MAX_STEPS, Parts, compile_parts, render_parts


def render(text: str, data: dict | None = None, subject: str = "Hi", html: str | None = None) -> Parts:
    return render_parts(compile_parts(Parts(subject=subject, text=text, html=html)), data or {})


def refusal(text: str, data: dict | None = None) -> TemplateDataError:
    with pytest.raises(TemplateDataError) as caught:
        render(text, data)
    return caught.value


def test_html_is_escaped_and_text_and_subject_are_not() -> None:
    data = {"name": '<script>alert("x")</script> & Co'}

    parts = render("Dear {{ name }}", data, subject="For {{ name }}", html="<p>Dear {{ name }}</p>")

    assert parts.subject == 'For <script>alert("x")</script> & Co'
    assert parts.text == 'Dear <script>alert("x")</script> & Co'
    assert parts.html == "<p>Dear &lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; Co</p>"


def test_text_and_html_keep_their_last_newline_and_the_subject_does_not_get_one() -> None:
    parts = render("Hello\n", subject="Hi\n", html="<p>x</p>\n")

    assert (parts.subject, parts.text, parts.html) == ("Hi", "Hello\n", "<p>x</p>\n")


@pytest.mark.parametrize(
    ("text", "data", "field"),
    [
        ("{{ name }}", {}, "data.name"),
        ("{{ user.name }}", {"user": {"id": 1}}, "data.user.name"),
        ("{{ items[1].sku }}", {"items": [{"sku": "a"}, {}]}, "data.items[1].sku"),
        ("{% if coupon %}x{% endif %}", {}, "data.coupon"),
        ("{{ total + 1 }}", {}, "data.total"),
    ],
)
def test_a_missing_variable_is_named_never_left_blank(text: str, data: dict, field: str) -> None:
    error = refusal(text, data)

    assert [detail.field for detail in error.details] == [field]
    assert "line 1 of" not in error.message
    assert "text, line 1" in error.message


def test_optional_variables_can_be_tested_or_defaulted() -> None:
    text = "{% if coupon is defined %}{{ coupon }}{% endif %}{{ note | default('none') }}"

    assert render(text).text == "none"
    assert render(text, {"coupon": "C1", "note": "n"}).text == "C1n"


def test_a_compile_error_names_the_part_and_line() -> None:
    with pytest.raises(InvalidTemplate) as caught:
        compile_parts(Parts(subject="Hi {{ name", text="ok\n{% for x in %}\n"))

    assert [(d.field, d.message.split(":")[0]) for d in caught.value.details] == [
        ("subject", "line 1"),
        ("text", "line 2"),
    ]


@pytest.mark.parametrize(
    "text",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ name.__class__ }}",
        "{% set l = [1] %}{{ l.append(2) }}",
        "{{ {}.update(a=1) }}",
    ],
)
def test_python_internals_and_mutation_are_out_of_reach(text: str) -> None:
    error = refusal(text, {"name": "x"})

    assert error.details[0].field == "template"
    assert "unsafe" in error.message


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("{% for i in range(1000) %}{% for j in range(1000) %}{% endfor %}{% endfor %}", "loop iterations"),
        ("{% macro f(n) %}{{ f(n) ~ f(n) }}{% endmacro %}{{ f(1) }}", ""),
        ("{{ 'a' * 100000000 }}", "repetition"),
        ("{{ 'a' | center(1000000000) }}", "larger than"),
        ("{{ 'a'.ljust(1000000000) }}", "larger than"),
        ("{{ ('x' * 1000) | replace('', 'y' * 2000) }}", "replace"),
        ("{{ 'x'.replace('', 'y' * 2000) if false else ('x' * 1000).replace('', 'y' * 2000) }}", "replace"),
        ("{{ range(100000) | join('x' * 100) }}", "join"),
        ("{{ 2 ** 100000000 }}", "power"),
        ("{{ '%1000000000s' % 'a' }}", "format width"),
        ("{{ '{:>1000000000}'.format('a') }}", "format width"),
        ("{% set s = 'aaaaaaaaaaaaaaaa' %}" + "{% set s = s ~ s %}" * 40 + "{{ s }}", "grows past"),
        ("{% for i in range(99999) %}{{ 'x' * 100 }}{% endfor %}", "longer than"),
    ],
)
def test_a_render_that_would_run_away_is_stopped(text: str, reason: str) -> None:
    error = refusal(text)

    assert error.details[0].field in {"template", "data"}
    assert reason in error.message


def test_the_bounds_leave_room_for_real_emails() -> None:
    rows = [{"sku": f"S{i}", "qty": i} for i in range(2000)]
    text = "{% for row in rows %}{{ loop.index }}. {{ row.sku }} x{{ row.qty }}\n{% endfor %}"

    rendered = render(text, {"rows": rows}).text

    assert rendered is not None
    assert rendered.count("\n") == 2000
    assert len(rendered) < MAX_OUTPUT_CHARS
    assert MAX_STEPS > 2000 * 3


def test_runtime_errors_are_the_callers_to_fix() -> None:
    error = refusal("line one\n{{ 1 / count }}", {"count": 0})

    assert error.details[0].field == "data"
    assert "text, line 2" in error.message
    assert "ZeroDivisionError" in error.message


# --- the text made from HTML ----------------------------------------------------------------------------------------


def test_html_to_text_keeps_words_paragraphs_lists_and_links() -> None:
    html = """<html><head><title>x</title><style>p { color: red }</style></head><body>
    <h1>Welcome,   Bob &amp; Co</h1>
    <p>Reset <a href="https://example.com/r/1">your password</a> now.<br>Thanks</p>
    <ul><li>one</li><li>two</li></ul>
    <p><a href="https://example.com">https://example.com</a> <a href="mailto:help@example.com">write</a>
    <img src="x.png" alt="Logo"></p><script>alert(1)</script></body></html>"""

    assert html_to_text(html) == (
        "Welcome, Bob & Co\n"
        "\n"
        "Reset your password (https://example.com/r/1) now.\n"
        "Thanks\n"
        "\n"
        "- one\n"
        "- two\n"
        "\n"
        "https://example.com write (help@example.com) Logo\n"
    )


def test_html_to_text_of_nothing_readable_is_empty() -> None:
    assert html_to_text("<style>p{}</style><img src='x.png'>") == ""


def test_no_function_imports_jinja2_at_cold_start() -> None:
    """Only a render loads Jinja2: the sender, requeue and events functions never do, the API on first use."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    folders = ["layers/shared", "functions/api", "functions/sender", "functions/requeue", "functions/events"]
    environment = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(str(root / folder) for folder in folders),
        "AWS_DEFAULT_REGION": "us-east-1",
        "POWERTOOLS_TRACE_DISABLED": "1",
    }
    script = "import sys, api, sender, requeue, ses_events; print(sorted(m for m in sys.modules if 'jinja2' in m))"

    answer = subprocess.run(
        [sys.executable, "-c", script], env=environment, capture_output=True, text=True, check=True, timeout=120
    )

    assert answer.stdout.strip() == "[]", answer.stderr


def test_data_nested_as_deep_as_json_allows_is_no_failure() -> None:
    data: dict = {"leaf": "x"}
    for _ in range(5000):
        data = {"inner": data}

    assert render("{{ inner.inner.missing | default('none') }}", data).text == "none"
    assert refusal("{{ inner.inner.absent }}", data).details[0].field == "data.inner.inner.absent"
