"""Email ids: ULIDs, so ids sort by creation time and the status index lists newest first."""

from __future__ import annotations

import re
import zlib

ID_PATTERN = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")


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
