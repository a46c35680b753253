"""A plain-text alternative made from an HTML body, for emails given only HTML.

HTML-only mail scores worse with spam filters (SpamAssassin's ``MIME_HTML_ONLY``), and some readers
and screen readers prefer text. The text keeps what a reader needs: the words, paragraphs and line
breaks, list items, and each link's address after its text (``Reset your password
(https://example.com/r/1)``). Scripts, styles and the head are dropped. Built on the standard
library's HTML parser, which tolerates the broken HTML that email often is.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

# Elements that start and end a block of text.
_BLOCKS = frozenset(
    {
        "address",
        "article",
        "aside",
        "blockquote",
        "center",
        "dd",
        "div",
        "dl",
        "dt",
        "fieldset",
        "figcaption",
        "figure",
        "footer",
        "form",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "header",
        "hr",
        "li",
        "main",
        "nav",
        "ol",
        "p",
        "pre",
        "section",
        "table",
        "tr",
        "ul",
    }
)
_SKIPPED = frozenset({"head", "script", "style", "template", "title"})
_SPACES = re.compile(r"[ \t\r\n\f\v]+")


class _TextParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.lines: list[str] = []
        self.line: list[str] = []
        self.skipping = 0
        self.preformatted = 0
        self.links: list[tuple[str, int]] = []

    # --- the text, line by line ---------------------------------------------------------------------------

    def _write(self, text: str) -> None:
        self.line.append(text)

    def _break(self, blank: bool = False) -> None:
        line = "".join(self.line)
        self.line = []
        if not self.preformatted:
            line = _SPACES.sub(" ", line).strip()
        if line:
            self.lines.append(line)
        if blank and self.lines and self.lines[-1] != "":
            self.lines.append("")

    # --- the parser's callbacks ------------------------------------------------------------------------

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIPPED:
            self.skipping += 1
            return
        values = dict(attrs)
        if tag == "br":
            self._break()
        elif tag in _BLOCKS:
            self._break(blank=tag in {"p", "h1", "h2", "h3", "h4", "h5", "h6", "table", "ul", "ol", "blockquote"})
            if tag == "li":
                self._write("- ")
            if tag == "pre":
                self.preformatted += 1
        elif tag in {"td", "th"}:
            self._write(" ")
        elif tag == "a":
            self.links.append((values.get("href") or "", sum(len(part) for part in self.line)))
        elif tag == "img" and values.get("alt"):
            self._write(f" {values['alt']} ")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIPPED:
            self.skipping = max(0, self.skipping - 1)
            return
        if tag == "a" and self.links:
            href, _ = self.links.pop()
            label = _SPACES.sub(" ", "".join(self.line)).strip()
            if href and not href.startswith("#") and href not in label:
                address = href.removeprefix("mailto:")
                self._write(f" ({address})" if label else address)
        elif tag in _BLOCKS:
            if tag == "pre":
                self.preformatted = max(0, self.preformatted - 1)
            self._break(blank=tag in {"p", "h1", "h2", "h3", "h4", "h5", "h6", "table", "ul", "ol", "blockquote"})

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)

    def handle_data(self, data: str) -> None:
        if not self.skipping:
            self._write(data)


def html_to_text(html: str) -> str:
    """The readable text of ``html``, with links' addresses kept; lines end with a newline."""
    parser = _TextParser()
    parser.feed(html)
    parser.close()
    parser._break()
    lines = parser.lines
    while lines and lines[-1] == "":
        lines.pop()
    return "\n".join(lines) + "\n" if lines else ""
