"""What text may stand in a header or a MIME parameter as it is.

Shared by the request model (which refuses such text at the door) and the renderer (which refuses to
write it, whatever the stored content holds). No dependencies: the sender imports it at cold start.
"""

from __future__ import annotations

import re

# What no header may hold: control characters, the line breaks Python's str.splitlines() honours beyond
# them (U+0085, U+2028, U+2029: the email package folds on them), and lone surrogates (not UTF-8).
_HEADER_UNSAFE = re.compile("[\x00-\x08\x0a-\x1f\x7f\x85\u2028\u2029\ud800-\udfff]")
# The start of RFC 2047 encoded-word syntax. Readers decode encoded words wherever they stand (Python's
# email package even inside quoted strings and addresses), and some without the closing ?=, so a
# caller's literal =?...?= would reach the reader as something else: possibly line breaks and headers
# of its own. Nothing a caller means needs it: mailqueue encodes non-ASCII text itself.
ENCODED_WORD = re.compile(r"=\?")
ENCODED_WORD_REFUSAL = (
    "must not contain '=?', which mail readers take for an RFC 2047 encoded word: give the text itself, "
    "mailqueue encodes it"
)


def header_text_problem(value: str, allow_tab: bool = False) -> str | None:
    """Why ``value`` cannot go into a header or a MIME parameter as it is, or None when it can."""
    unsafe = _HEADER_UNSAFE.search(value.replace("\t", " ") if allow_tab else value)
    if unsafe or (not allow_tab and "\t" in value):
        character = unsafe.group() if unsafe else "\t"
        return f"must not contain line breaks or control characters (found U+{ord(character):04X})"
    if ENCODED_WORD.search(value):
        return ENCODED_WORD_REFUSAL
    return None
