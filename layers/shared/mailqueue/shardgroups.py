"""Which shards one requeue run reads: its group of shards, from the event that started it.

The requeue function runs once a minute per group: the template gives each of its schedules an
``Input`` of ``{"shard_group": g, "shard_groups": G}``, which EventBridge Scheduler passes to the
function as the event, as it is. A run of group ``g`` reads the ``by-deadline`` shards and sweeps the
``by-arrival`` shards ``s`` with ``s % G == g``: the ``G`` groups together cover every shard exactly
once, whatever ``DEADLINE_SHARDS`` is, so the runs of one minute work side by side, each in its own
invocation, and never on the same emails. An event without either key (a manual invoke, the sample
event, a schedule deployed before the groups) runs every shard, as one run did before.

An event with only one of the keys, or values that are not whole numbers in range, is refused with
:class:`BadShardGroup` (a failed run, which the requeue errors alarm sees), never read as some other
group, or as a group of no shards: either would leave due emails unread without a word.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

GROUP_KEY = "shard_group"
GROUPS_KEY = "shard_groups"
# As many groups as there can be shards (settings: deadline_shards at most 64).
MAX_GROUPS = 64


class BadShardGroup(ValueError):
    """The event names no valid group of shards; the message says which key and why."""


@dataclass(frozen=True)
class ShardGroup:
    """Group ``index`` of ``count``: the shards ``s`` with ``s % count == index``."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.count <= MAX_GROUPS:
            raise BadShardGroup(f"{GROUPS_KEY} must be from 1 to {MAX_GROUPS}, not {self.count}")
        if not 0 <= self.index < self.count:
            raise BadShardGroup(f"{GROUP_KEY} must be from 0 to {GROUPS_KEY} - 1 ({self.count - 1}), not {self.index}")

    def shards(self, total: int) -> list[int]:
        """The group's shards among ``range(total)``; a group that holds none of them is refused."""
        shards = [shard for shard in range(total) if shard % self.count == self.index]
        if not shards:
            raise BadShardGroup(
                f"{GROUP_KEY} {self.index} of {self.count} holds none of the {total} shards:"
                f" DEADLINE_SHARDS must be at least {GROUPS_KEY} ({self.count})"
            )
        return shards

    def as_dict(self) -> dict[str, int]:
        """The schedule ``Input`` that names this group."""
        return {GROUP_KEY: self.index, GROUPS_KEY: self.count}


EVERY_SHARD = ShardGroup()


def shard_group_of(event: Any) -> ShardGroup:
    """The group of shards ``event`` names; every shard when it names none."""
    if not isinstance(event, Mapping):
        # A schedule's Input may be any JSON: a list or a number names no group, and is not read as every shard.
        raise BadShardGroup(f"the event must be a JSON object, not {type(event).__name__}")
    present = [key for key in (GROUP_KEY, GROUPS_KEY) if key in event]
    if not present:
        return EVERY_SHARD
    if len(present) == 1:
        missing = GROUPS_KEY if present == [GROUP_KEY] else GROUP_KEY
        raise BadShardGroup(f"{missing} is missing: an event names both {GROUP_KEY} and {GROUPS_KEY}, or neither")
    index, count = _whole(event, GROUP_KEY), _whole(event, GROUPS_KEY)
    return ShardGroup(index, count)


def _whole(event: Mapping[str, Any], key: str) -> int:
    value = event[key]
    # JSON's numbers only: true is not 1, "2" is not 2, 2.0 is not a shard.
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadShardGroup(f"{key} must be a whole number, not {value!r}")
    return value
