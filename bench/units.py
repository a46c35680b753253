"""The arithmetic of the bench, apart from any measuring: what AWS bills for what was measured.

DynamoDB (https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/CapacityUnitCalculations.html):
an item's size is the sum of its attribute names and values (strings and binaries by their bytes,
numbers at one byte per two significant digits plus one, lists and maps 3 bytes plus one byte per
element). A write costs one write unit per KB of the whole item, the larger of its before and after
images, in the table and again in every index the write touches: a put or delete where the index
holds the item, and a delete *plus* a put when a write changes the index's key. A failed conditional
write still costs the units of the item it was checked against. A strongly consistent read costs one
read unit per 4 KB, an eventually consistent one half that; a query is rounded up over the total it
returns.

SQS bills each 64 KB chunk of a request's payload as one request. Lambda bills memory × duration,
rounded up to the millisecond, per invocation.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

WRITE_UNIT_BYTES = 1024
READ_UNIT_BYTES = 4096
SQS_CHUNK_BYTES = 64 * 1024
# CloudWatch bills log ingestion per GB of 2^30 bytes.
LOG_GB_BYTES = 1024**3

Item = Mapping[str, Mapping[str, Any]]  # DynamoDB JSON: {"name": {"S": "value"}, …}


# --- DynamoDB item sizes -------------------------------------------------------------------------------------


def number_size(text: str) -> int:
    """Bytes DynamoDB counts for a number: one per two significant digits, plus one."""
    mantissa = text.strip().lstrip("+-").lower().split("e", 1)[0]
    # Leading and trailing zeros are trimmed: DynamoDB keeps the magnitude in its exponent byte.
    significant = mantissa.replace(".", "").strip("0")
    return (len(significant) + 1) // 2 + 1


def _binary_size(value: Any) -> int:
    if isinstance(value, bytes | bytearray | memoryview):
        return len(value)
    # A base64 string, as DynamoDB's wire format carries binaries.
    return len(base64.b64decode(value))


def value_size(value: Mapping[str, Any]) -> int:
    """Bytes of one typed value ({"S": "…"}, {"N": "…"}, {"M": {…}}, …), without its attribute name."""
    ((kind, raw),) = value.items()
    if kind == "S":
        return len(str(raw).encode("utf-8"))
    if kind == "N":
        return number_size(str(raw))
    if kind == "B":
        return _binary_size(raw)
    if kind in {"BOOL", "NULL"}:
        return 1
    if kind == "SS":
        return sum(len(str(member).encode("utf-8")) for member in raw)
    if kind == "NS":
        return sum(number_size(str(member)) for member in raw)
    if kind == "BS":
        return sum(_binary_size(member) for member in raw)
    if kind == "L":
        return 3 + sum(1 + value_size(member) for member in raw)
    if kind == "M":
        return 3 + sum(1 + len(name.encode("utf-8")) + value_size(member) for name, member in raw.items())
    raise ValueError(f"not a DynamoDB type: {kind}")


def item_size(item: Item) -> int:
    """Bytes of a whole item: every attribute's name and value."""
    return sum(len(name.encode("utf-8")) + value_size(value) for name, value in item.items())


def write_units(size: int) -> int:
    """Standard write units for an item of ``size`` bytes: one per KB, at least one."""
    return max(1, math.ceil(size / WRITE_UNIT_BYTES))


def read_units(size: int, consistent: bool) -> float:
    """Read units for reading ``size`` bytes: one per 4 KB strongly consistent, half that eventually."""
    units = max(1, math.ceil(size / READ_UNIT_BYTES))
    return float(units) if consistent else units / 2


# --- tables and indexes --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Index:
    """A global secondary index: its key attributes and what it projects."""

    name: str
    keys: tuple[str, ...]
    projection: str = "ALL"  # ALL, KEYS_ONLY or INCLUDE
    non_key: tuple[str, ...] = ()

    def holds(self, item: Item | None) -> bool:
        """An index holds an item only when the item has every key attribute of the index (sparse indexes)."""
        return item is not None and all(key in item for key in self.keys)

    def key_of(self, item: Item) -> tuple[Any, ...]:
        return tuple(_plain(item[key]) for key in self.keys)

    def partition_of(self, item: Item) -> str:
        """The value of the index's partition key in ``item``, as text."""
        ((_, value),) = item[self.keys[0]].items()
        return str(value)

    def project(self, item: Item, table_keys: tuple[str, ...]) -> dict[str, Mapping[str, Any]]:
        """The index's copy of ``item``."""
        if self.projection == "ALL":
            return dict(item)
        wanted = set(table_keys) | set(self.keys)
        if self.projection == "INCLUDE":
            wanted |= set(self.non_key)
        return {name: value for name, value in item.items() if name in wanted}


@dataclass(frozen=True)
class Table:
    name: str
    keys: tuple[str, ...]
    indexes: tuple[Index, ...] = ()

    def index(self, name: str) -> Index:
        return next(index for index in self.indexes if index.name == name)


def _plain(value: Mapping[str, Any]) -> Any:
    """A typed value as something comparable (lists and maps compared through their repr)."""
    ((kind, raw),) = value.items()
    return (kind, raw if isinstance(raw, str | bytes | bool) or raw is None else repr(raw))


@dataclass
class WriteCost:
    """Write units one write consumed: in the table, and in each index it touched."""

    table: int = 0
    indexes: dict[str, int] = field(default_factory=dict)
    # Per index, the units by the partition key value they went to: a partition takes 1,000 a second.
    partitions: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return self.table + sum(self.indexes.values())


def write_cost(table: Table, old: Item | None, new: Item | None) -> WriteCost:
    """Write units of a write that turned ``old`` into ``new`` (None: absent before, or deleted)."""
    sizes = [item_size(image) for image in (old, new) if image is not None]
    cost = WriteCost(table=write_units(max(sizes, default=0)))
    for index in table.indexes:
        was, now = index.holds(old), index.holds(new)
        # (partition key value, units) of each index item written: deleted, put or updated.
        written: list[tuple[str, int]] = []
        if was and now:
            assert old is not None
            assert new is not None
            before, after = index.project(old, table.keys), index.project(new, table.keys)
            if index.key_of(old) != index.key_of(new):
                # A new key is a new index item: delete the old one, put the new one.
                written += [(index.partition_of(old), write_units(item_size(before)))]
                written += [(index.partition_of(new), write_units(item_size(after)))]
            elif before != after:
                written += [(index.partition_of(new), write_units(max(item_size(before), item_size(after))))]
        elif was:
            assert old is not None
            written += [(index.partition_of(old), write_units(item_size(index.project(old, table.keys))))]
        elif now:
            assert new is not None
            written += [(index.partition_of(new), write_units(item_size(index.project(new, table.keys))))]
        if written:
            cost.indexes[index.name] = sum(units for _, units in written)
            spread = cost.partitions.setdefault(index.name, {})
            for partition, units in written:
                spread[partition] = spread.get(partition, 0) + units
    return cost


def failed_write_cost(current: Item | None) -> WriteCost:
    """A conditional write whose condition failed: the table's units for the item checked, no index touched."""
    return WriteCost(table=write_units(item_size(current) if current else 0))


def query_read_units(sizes: Iterable[int], consistent: bool = False) -> float:
    """Read units of a query or scan: the total size of what it read, rounded up once."""
    return read_units(sum(sizes), consistent)


# --- SQS, Lambda ---------------------------------------------------------------------------------------------


def sqs_requests(payload_bytes: int) -> int:
    """Billed SQS requests for one API call carrying ``payload_bytes``: one per 64 KB chunk, at least one."""
    return max(1, math.ceil(payload_bytes / SQS_CHUNK_BYTES))


def gb_seconds(memory_mb: int, duration_ms: float) -> float:
    """Billed GB-seconds of one invocation: configured memory × duration rounded up to the millisecond."""
    return memory_mb / 1024 * math.ceil(duration_ms) / 1000


# --- cost ----------------------------------------------------------------------------------------------------


@dataclass
class Usage:
    """What one email (or one path, per email) uses of each billed dimension."""

    api_requests: float = 0.0
    lambda_requests: float = 0.0
    lambda_gb_seconds: float = 0.0
    sqs_requests: float = 0.0
    dynamodb_wru: float = 0.0
    dynamodb_rru: float = 0.0
    log_bytes: float = 0.0
    xray_traces: float = 0.0
    eventbridge_events: float = 0.0  # SES's events on the default bus
    status_events: float = 0.0  # the stack's own events on its status bus (custom events)
    s3_puts: float = 0.0
    s3_gets: float = 0.0

    def __add__(self, other: Usage) -> Usage:
        return Usage(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})

    def scaled(self, factor: float) -> Usage:
        return Usage(**{f.name: getattr(self, f.name) * factor for f in fields(self)})

    def as_dict(self) -> dict[str, float]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def price(prices: Mapping[str, Any], name: str) -> float:
    """One price from the price table (bench/prices.json): its ``prices.<name>.usd``."""
    return float(prices["prices"][name]["usd"])


def cost_per_million(usage: Usage, prices: Mapping[str, Any]) -> dict[str, float]:
    """Dollars per million emails, by service, for ``usage`` per email."""
    million = 1_000_000

    def per_million(name: str) -> float:
        return price(prices, name)

    return {
        "API Gateway": usage.api_requests * per_million("api_gateway_http_per_million_requests"),
        "Lambda requests": usage.lambda_requests * per_million("lambda_per_million_requests"),
        "Lambda duration": usage.lambda_gb_seconds * million * price(prices, "lambda_arm64_per_gb_second"),
        "SQS": usage.sqs_requests * per_million("sqs_standard_per_million_requests"),
        "DynamoDB writes": usage.dynamodb_wru * per_million("dynamodb_on_demand_per_million_wru"),
        "DynamoDB reads": usage.dynamodb_rru * per_million("dynamodb_on_demand_per_million_rru"),
        "CloudWatch Logs": usage.log_bytes * million / LOG_GB_BYTES * price(prices, "cloudwatch_logs_ingestion_per_gb"),
        "X-Ray": usage.xray_traces * per_million("xray_per_million_traces_recorded"),
        "EventBridge": usage.eventbridge_events * per_million("eventbridge_aws_opt_in_data_events_per_million"),
        "EventBridge status events": usage.status_events * per_million("eventbridge_custom_events_per_million"),
        "S3": usage.s3_puts * million / 1000 * price(prices, "s3_put_per_thousand")
        + usage.s3_gets * million / 1000 * price(prices, "s3_get_per_thousand"),
    }


# Auto scaling's usual target: provisioned units are paid for whether used or not.
PROVISIONED_UTILIZATION = 0.7


def provisioned_cost_per_million(usage: Usage, prices: Mapping[str, Any]) -> dict[str, float]:
    """``cost_per_million`` with DynamoDB on provisioned capacity, a steady load at ``PROVISIONED_UTILIZATION``:
    a unit a second for an hour is 3,600 units, of which that share is used."""
    costs = cost_per_million(usage, prices)
    units_per_unit_hour = 3600 * PROVISIONED_UTILIZATION
    million = 1_000_000
    costs["DynamoDB writes"] = (
        usage.dynamodb_wru * million / units_per_unit_hour * price(prices, "dynamodb_provisioned_per_wcu_hour")
    )
    costs["DynamoDB reads"] = (
        usage.dynamodb_rru * million / units_per_unit_hour * price(prices, "dynamodb_provisioned_per_rcu_hour")
    )
    return costs


def ses_cost_per_million(prices: Mapping[str, Any]) -> float:
    """SES's own fee for a million emails."""
    return 1000 * price(prices, "ses_per_thousand_emails")
