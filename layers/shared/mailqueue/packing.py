"""A content record's body, stored compressed when that saves DynamoDB write units.

DynamoDB bills a write by the size of the whole item, one write unit per KB, so an email's text
and HTML cost as many units as they have kilobytes, and HTML compresses three- to fivefold. A body
that compression shrinks by at least a kilobyte is stored as one zlib-compressed JSON attribute;
a smaller one stays as plain attributes, readable in the console at no extra cost.

The compression starts from a preset dictionary (:data:`DICTIONARY`: the body's JSON keys, the markup
and phrases of common transactional email), so even the first occurrence of ``<table role=...>`` costs
a few bytes: a 3.4 KB shipping notice packs to about 670 bytes instead of 1,020, one write unit
instead of two. The zlib stream names its dictionary (by checksum), so records packed without one,
before it existed, read back the same. The dictionary must never change: a better one would be a new
constant, chosen on read by the checksum the stream carries.
"""

from __future__ import annotations

import json
import zlib
from typing import Any

PACKED_BODY = "body_zlib"
# The least saving worth an unreadable item: one write unit.
_SAVING = 1024

_HTML = (
    "<!doctype html><html lang='en'><head><meta charset='utf-8'><meta name='viewport' content='width=devi"
    "ce-width, initial-scale=1'><title></title><style></style></head><body style='margin:0;padding:0;back"
    "ground:#ffffff;font-family:Helvetica,Arial,sans-serif;color:#333333'><table role='presentation' widt"
    "h='100%' cellpadding='0' cellspacing='0' border='0' style='background:#ffffff'><tr><td align='center"
    "' valign='top'><table role='presentation' width='600' cellpadding='0' cellspacing='0'><tr><td style="
    "'padding:24px'><h1 style='font-size:24px;line-height:32px;margin:0 0 16px'></h1><h2 style='font-size"
    ":18px;margin:0'></h2><p style='font-size:16px;line-height:24px;margin:0 0 16px'></p><p style='font-s"
    "ize:14px;line-height:20px;color:#666666'></p><td align='right'><strong></strong></td></tr></table><a"
    " href='https://' style='display:inline-block;background:#0066cc;color:#ffffff;padding:12px 24px;bord"
    "er-radius:4px;font-weight:bold;text-decoration:none' target='_blank'></a><img src='https://' alt='' "
    "width='' height='' style='display:block;border:0'><br>&nbsp;&amp;&times;&copy;&mdash;border-top:1px "
    "solid #e5e5e5;border-bottom:1px solid #e5e5e5;</td></tr></table></td></tr></table></body></html>"
)
_TEXT = (
    "Hello ,\\n\\nThank you for your order. If you have any questions, contact us at \\n\\nBest regards,\\nThe"
    " team\\nOrder number: Tracking number: Total: Shipping: Subtotal: Delivery address: Reset your passwo"
    "rd Verify your email address Your account Unsubscribe View in your browser https://"
)
# Version 1 of the shared dictionary. zlib uses at most its last 32 KB; what comes last matches best.
DICTIONARY = (
    '{"from":{"name":"","address":"@"},"to":[{"name":"","address":"@"}],"cc":[],"bcc":[],'
    '"reply_to":[],"subject":"","headers":{},"tags":[{"name":"","value":""}],'
    '"attachments":[{"filename":"","content_type":"application/pdf","content":""}],'
    f'"text":"{_TEXT}","html":"{_HTML}{_HTML.replace(chr(39), chr(92) + chr(34))}"}}'
).encode()


def pack(body: dict[str, Any]) -> dict[str, Any]:
    """The body's attributes for the content record: ``{PACKED_BODY: bytes}``, or the body itself."""
    text = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    if len(text) <= _SAVING:
        return body
    compressor = zlib.compressobj(6, zdict=DICTIONARY)
    packed = compressor.compress(text) + compressor.flush()
    return {PACKED_BODY: packed} if len(packed) + _SAVING <= len(text) else body


def unpack(item: dict[str, Any]) -> dict[str, Any]:
    """A content record with its body as plain attributes, whichever way it was stored."""
    if PACKED_BODY not in item:
        return item
    # boto3 reads a binary attribute as its own Binary type, which bytes() unwraps.
    # The dictionary is used only by a stream that asks for it: one packed before it existed reads the same.
    decompressor = zlib.decompressobj(zdict=DICTIONARY)
    packed = bytes(item[PACKED_BODY])
    body: dict[str, Any] = json.loads(decompressor.decompress(packed) + decompressor.flush())
    return {**{key: value for key, value in item.items() if key != PACKED_BODY}, **body}
