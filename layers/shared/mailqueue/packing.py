"""A content record's body, stored compressed when that saves DynamoDB write units.

DynamoDB bills a write by the size of the whole item, one write unit per KB, so an email's text
and HTML cost as many units as they have kilobytes, and HTML compresses three- to fivefold. A body
that compression shrinks by at least a kilobyte is stored as one zlib-compressed JSON attribute;
a smaller one stays as plain attributes, readable in the console at no extra cost.
"""

from __future__ import annotations

import json
import zlib
from typing import Any

PACKED_BODY = "body_zlib"
# The least saving worth an unreadable item: one write unit.
_SAVING = 1024


def pack(body: dict[str, Any]) -> dict[str, Any]:
    """The body's attributes for the content record: ``{PACKED_BODY: bytes}``, or the body itself."""
    text = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    if len(text) <= _SAVING:
        return body
    packed = zlib.compress(text, 6)
    return {PACKED_BODY: packed} if len(packed) + _SAVING <= len(text) else body


def unpack(item: dict[str, Any]) -> dict[str, Any]:
    """A content record with its body as plain attributes, whichever way it was stored."""
    if PACKED_BODY not in item:
        return item
    # boto3 reads a binary attribute as its own Binary type, which bytes() unwraps.
    body: dict[str, Any] = json.loads(zlib.decompress(bytes(item[PACKED_BODY])))
    return {**{key: value for key, value in item.items() if key != PACKED_BODY}, **body}
