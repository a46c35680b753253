"""Email ids: ULIDs, so ids sort by creation time and the status index lists newest first."""

from __future__ import annotations

import re
import zlib

ID_PATTERN = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")
# Crockford's base32, as ULIDs write their 48-bit millisecond timestamp in the first 10 characters.
_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_TIME_CHARS = 10


def new_email_id() -> str:
    # Imported here: python-ulid reads its own version from the package metadata when imported, work
    # that only the functions creating emails (the API) need, not every importer of is_email_id.
    from ulid import ULID  # noqa: PLC0415

    return str(ULID())


def is_email_id(value: str) -> bool:
    return bool(ID_PATTERN.match(value))


def shard_of(email_id: str, shards: int) -> int:
    """A stable shard for an id: spreads index writes over ``shards`` partitions."""
    return zlib.crc32(email_id.encode()) % shards


def created_ms(email_id: str) -> int:
    """When the id was made, in milliseconds since the epoch (a ULID's first 10 characters); 0 for an id
    that is not a ULID, which makes every deadline of its email lie past its horizon (always indexed)."""
    value = 0
    for char in email_id[:_TIME_CHARS]:
        digit = _ALPHABET.find(char)
        if digit < 0:
            return 0
        value = value * 32 + digit
    return value


def last_id_at(ms: int) -> str:
    """The greatest id that can have been made at ``ms``: ids up to it were made at ``ms`` or before."""
    chars = []
    for _ in range(_TIME_CHARS):
        ms, digit = divmod(ms, 32)
        chars.append(_ALPHABET[digit])
    return "".join(reversed(chars)) + "Z" * 16
