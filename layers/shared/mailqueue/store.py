"""All DynamoDB access: the status record, the content record, and the indexes that read them.

Each email is two items under one partition key (its id):
- ``sk = "status"``: the small record that every transition rewrites (status, attempts, deadline,
  history, a readable summary). It stays well under 1 KB, since DynamoDB bills a write by the item.
- ``sk = "content"``: what the sender renders (addresses, subject, bodies, headers, attachments),
  written once at enqueue and read once per attempt; compressed when that saves write units
  (:mod:`mailqueue.packing`), in S3 when too large for an item.

A write costs a unit in every index whose key or projected attributes it changes, so an email on its
normal path (enqueued, claimed, sent, delivered) moves no index after its enqueue:

- ``by-arrival`` (``arrival_shard``, ``pk``), keys only: every email, entered once at enqueue with keys
  that never change. The requeue function sweeps it (see :mod:`mailqueue.sweeping`): each email is
  examined once, after its sweep point (its id's time + the queued grace + twice ``sweep_lag_seconds``),
  which finds every live email whose deadline lies before its horizon (its id's time + the grace + the
  lag). It also lists the common statuses, newest first.
- ``by-deadline`` (``shard``, ``deadline``): sparse, holding the live emails whose deadline the sweep
  would find too late: scheduled and retrying ones (their deadline is when to send), and any whose
  deadline lies past the horizon (a late claim, a requeued email, a delayed one). Such an email keeps
  ``shard`` while it is live; the requeue function reads what is due, shard by shard.
- ``by-status`` (``status_shard``, ``pk``): sparse, listing the statuses an operator looks for among
  many (failed, bounced, complained, cancelled), newest first, write-sharded.

The store hands the status record out as a :class:`mailqueue.records.StatusRecord`, built once from
each item it reads, and names its attributes by :class:`mailqueue.records.Attr` in every expression.
"""

from __future__ import annotations

import contextlib
import re
import time
from dataclasses import replace
from datetime import datetime
from decimal import Decimal
from typing import Any

from mailqueue import clock
from mailqueue.errors import Unavailable
from mailqueue.ids import created_ms, shard_of
from mailqueue.records import STATUS_KIND, Attr, StatusRecord, iso_or_none
from mailqueue.settings import Settings
from mailqueue.statemachine import Change, Guard, Status, history_entry, trimmed

STATUS = STATUS_KIND
CONTENT = "content"
# The item binding an idempotency key to the ids of the emails it created.
IDS = "ids"
# The partition of the sweep's cursors, one item per by-arrival shard.
SWEEP = "sweep"
# The sweep's cursor before its first sweep: below every id.
SWEEP_START = "0"
DEADLINE_INDEX = "by-deadline"
STATUS_INDEX = "by-status"
ARRIVAL_INDEX = "by-arrival"
# Statuses listed through ``by-status``: rare among all emails, so a scan of every email would not find them.
STATUS_INDEXED = frozenset({"failed", "bounced", "complained", "cancelled"})
# Live statuses whose deadline is when to act, not a timeout: the sweep would find them too late.
TIMED = frozenset({"scheduled", "retrying"})
# The most emails one listing call examines when it scans rather than reads an index of its status.
_LIST_SCAN_LIMIT = 1_000
_BATCH_WRITE_LIMIT = 25
_UNPROCESSED_RETRIES = 5
# A TransactWriteItems call takes 100 actions: two per email settled.
_SETTLE_LIMIT = 50
# A BatchGetItem call reads 100 items.
_GET_LIMIT = 100
# Set on a content record whose email the API refused (503) while its status write was in doubt:
# if that write lands after all, the sender fails the email unsent.
WITHDRAWN = "withdrawn_at"


class ConditionFailed(Exception):
    """A conditional write found the record in another state. ``current`` is that record, if any."""

    def __init__(self, current: StatusRecord | None) -> None:
        super().__init__(f"condition failed; current status: {current.status if current else None}")
        self.current = current


def _serializer() -> Any:
    from boto3.dynamodb.types import TypeSerializer  # noqa: PLC0415

    return TypeSerializer()


def _deserializer() -> Any:
    from boto3.dynamodb.types import TypeDeserializer  # noqa: PLC0415

    return TypeDeserializer()


def _to_dynamo_safe(value: Any) -> Any:
    """DynamoDB numbers are Decimals; caller metadata may hold floats."""
    if isinstance(value, float):
        return Decimal(str(value))
    if isinstance(value, dict):
        return {key: _to_dynamo_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_to_dynamo_safe(item) for item in value]
    return value


def _from_dynamo_safe(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {key: _from_dynamo_safe(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_from_dynamo_safe(item) for item in value]
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    return value


class EmailStore:
    def __init__(self, settings: Settings, client: Any) -> None:
        self.settings = settings
        self.table = settings.table_name
        self._client = client
        self._ser = _serializer()
        self._de = _deserializer()

    # --- encoding -------------------------------------------------------------------------------------

    def _encode(self, item: dict[str, Any]) -> dict[str, Any]:
        return {key: self._ser.serialize(_to_dynamo_safe(value)) for key, value in item.items() if value is not None}

    def _decode(self, item: dict[str, Any]) -> dict[str, Any]:
        decoded = {key: self._de.deserialize(value) for key, value in item.items()}
        result: dict[str, Any] = _from_dynamo_safe(decoded)
        return result

    # --- keys and shards ------------------------------------------------------------------------------

    def deadline_shard(self, email_id: str) -> int:
        return shard_of(email_id, self.settings.deadline_shards)

    def status_shard(self, email_id: str, status: str) -> str:
        return f"{status}#{shard_of(email_id, self.settings.status_shards)}"

    def arrival_shard(self, email_id: str) -> int:
        return shard_of(email_id, self.settings.deadline_shards)

    def horizon(self, email_id: str) -> datetime:
        """The latest deadline the sweep finds in time: the id's time, the queued grace and the lag."""
        seconds = self.settings.queued_grace_seconds + self.settings.sweep_lag_seconds
        return clock.after(clock.from_epoch_ms(created_ms(email_id)), seconds)

    def sweep_point(self, email_id: str) -> datetime:
        """When the sweep examines the email: a lag past its horizon, for clocks, late writes and index lag."""
        return clock.after(self.horizon(email_id), self.settings.sweep_lag_seconds)

    def needs_deadline_index(self, email_id: str, status: str, deadline: datetime) -> bool:
        """Whether a live email must be in ``by-deadline``: the sweep would not find it in time."""
        return status in TIMED or deadline > self.horizon(email_id)

    def indexed(self, record: StatusRecord) -> StatusRecord:
        """A new status record with the index keys it carries (see the module's docstring)."""
        email_id, status, deadline = record.email_id, record.status, record.deadline
        return replace(
            record,
            arrival_shard=self.arrival_shard(email_id),
            shard=(
                self.deadline_shard(email_id)
                if deadline is not None and self.needs_deadline_index(email_id, status, deadline)
                else None
            ),
            status_shard=self.status_shard(email_id, status) if status in STATUS_INDEXED else None,
        )

    @staticmethod
    def key(email_id: str, kind: str = STATUS) -> dict[str, Any]:
        return {"pk": {"S": email_id}, "sk": {"S": kind}}

    # --- writing new emails ---------------------------------------------------------------------------

    def put_new(self, records: list[tuple[StatusRecord, dict[str, Any]]]) -> set[str]:
        """Write (status, content) pairs; returns the ids that could not be written.

        Each status record is written with its index keys (:meth:`indexed`). Contents go first, then the
        status records of the emails whose content landed: a status record never exists without its
        content, and a content item left alone by a failed status write expires by its TTL, never sent.
        """
        contents = {status.email_id: content for status, content in records}
        failed = self._batch_put(list(contents.values()))
        statuses = [self.indexed(status).to_item() for status, _ in records if status.email_id not in failed]
        failed |= self._batch_put(statuses)
        return failed

    def _batch_put(self, items: list[dict[str, Any]]) -> set[str]:
        """Put ``items`` 25 at a time; the ids of those that may not have been written.

        Puts are idempotent (the same item again), so a chunk is retried whole after any error,
        and only what is still pending when the retries run out is reported.
        """
        from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415

        failed: set[str] = set()
        for start in range(0, len(items), _BATCH_WRITE_LIMIT):
            chunk = items[start : start + _BATCH_WRITE_LIMIT]
            requests = [{"PutRequest": {"Item": self._encode(item)}} for item in chunk]
            for attempt in range(_UNPROCESSED_RETRIES):
                try:
                    answer = self._client.batch_write_item(RequestItems={self.table: requests})
                except (BotoCoreError, ClientError) as error:
                    if attempt == _UNPROCESSED_RETRIES - 1 or _out_of_time(error):
                        failed.update(request["PutRequest"]["Item"]["pk"]["S"] for request in requests)
                        break
                    time.sleep(0.05 * 2**attempt)
                    continue
                requests = answer.get("UnprocessedItems", {}).get(self.table, [])
                if not requests:
                    break
                time.sleep(0.05 * 2**attempt)
            else:
                failed.update(request["PutRequest"]["Item"]["pk"]["S"] for request in requests)
        return failed

    def extend_content(self, email_id: str, expires_at: int) -> None:
        """Move the content record's expiry later (never earlier)."""
        # A failed condition: already kept as long (or gone: the sender then fails the email with the reason).
        with contextlib.suppress(self._client.exceptions.ConditionalCheckFailedException):
            self._client.update_item(
                TableName=self.table,
                Key=self.key(email_id, CONTENT),
                UpdateExpression="SET expires_at = :until",
                ConditionExpression="attribute_exists(pk) AND expires_at < :until",
                ExpressionAttributeValues={":until": {"N": str(expires_at)}},
            )

    def attempt_seconds(self) -> float:
        """The longest one attempt of a call to the table can take (its client's timeouts)."""
        config = self._client.meta.config
        return float(config.connect_timeout) + float(config.read_timeout)

    def claim_ids(self, claim: str, email_ids: list[str], expires_at: int) -> tuple[list[str], bool]:
        """The email ids bound to ``claim`` (an idempotency key), and whether they are bound only now:
        ``email_ids`` if it had none yet."""
        item = {"pk": claim, "sk": IDS, "email_ids": email_ids, "expires_at": expires_at}
        try:
            self._client.put_item(
                TableName=self.table, Item=self._encode(item), ConditionExpression="attribute_not_exists(pk)"
            )
        except self._client.exceptions.ConditionalCheckFailedException:
            # Bound by an earlier request with this key (or by this one, whose answer botocore lost).
            bound = self._client.get_item(TableName=self.table, Key=self.key(claim, IDS), ConsistentRead=True)
            if "Item" not in bound:  # expired in between: nothing is bound to the key any more
                return email_ids, True
            ids: list[str] = self._decode(bound["Item"])["email_ids"]
            return ids, False
        return email_ids, True

    def existing(self, email_ids: list[str]) -> dict[str, StatusRecord]:
        """The status records that exist among ``email_ids`` (strongly consistent reads)."""
        found: dict[str, StatusRecord] = {}
        for email_id in email_ids:
            record = self.get(email_id)
            if record is not None:
                found[email_id] = record
        return found

    def settle_unwritten(self, email_ids: list[str], expires_at: int, at: str) -> tuple[set[str], set[str]]:
        """Settle emails whose status write is in doubt: (stored, withdrawn).

        For each email, one transaction checks that its status record does not exist and, only then,
        replaces its content record with a withdrawn one; the status record, should its write land
        later after all, then names an email the sender fails unsent. A transaction cancelled because
        the status record exists means the write landed: the email is stored. Ids in neither set
        could not be settled (DynamoDB did not answer).
        """
        from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415

        stored: set[str] = set()
        withdrawn: set[str] = set()
        pending = list(email_ids)
        for _ in range(len(email_ids) // _SETTLE_LIMIT + _UNPROCESSED_RETRIES):
            if not pending:
                break
            chunk, pending = pending[:_SETTLE_LIMIT], pending[_SETTLE_LIMIT:]
            actions: list[dict[str, Any]] = []
            for email_id in chunk:
                actions.append(
                    {
                        "ConditionCheck": {
                            "TableName": self.table,
                            "Key": self.key(email_id),
                            "ConditionExpression": "attribute_not_exists(pk)",
                        }
                    }
                )
                tombstone = {"pk": email_id, "sk": CONTENT, WITHDRAWN: at, "expires_at": expires_at}
                actions.append({"Put": {"TableName": self.table, "Item": self._encode(tombstone)}})
            try:
                self._client.transact_write_items(TransactItems=actions)
            except ClientError as error:
                reasons = error.response.get("CancellationReasons") or []
                if error.response.get("Error", {}).get("Code") != "TransactionCanceledException" or not reasons:
                    break
                landed = {
                    chunk[index // 2]
                    for index, reason in enumerate(reasons)
                    if index % 2 == 0 and reason.get("Code") == "ConditionalCheckFailed"
                }
                stored |= landed
                # The others were cancelled with them: settle them again.
                pending = [email_id for email_id in chunk if email_id not in landed] + pending
                continue
            except BotoCoreError:
                break
            withdrawn.update(chunk)
        return stored, withdrawn

    # --- reading --------------------------------------------------------------------------------------

    def get(self, email_id: str, consistent: bool = True) -> StatusRecord | None:
        """The email's status record, if it exists."""
        item = self._get(email_id, STATUS, consistent)
        return None if item is None else StatusRecord.from_item(item)

    def get_content(self, email_id: str, consistent: bool = True) -> dict[str, Any] | None:
        """The email's content record (as stored: see ``mailqueue.packing``), if it exists."""
        return self._get(email_id, CONTENT, consistent)

    def _get(self, email_id: str, kind: str, consistent: bool) -> dict[str, Any] | None:
        answer = self._client.get_item(TableName=self.table, Key=self.key(email_id, kind), ConsistentRead=consistent)
        return self._decode(answer["Item"]) if "Item" in answer else None

    def query_due(
        self, shard: int, due_before: str, limit: int, start: dict[str, Any] | None = None
    ) -> tuple[list[StatusRecord], dict[str, Any] | None]:
        """Live emails of one shard whose deadline is at or before ``due_before``, earliest first: their
        records as the index holds them (status, priority, attempts, the deadline and the keys)."""
        params: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": DEADLINE_INDEX,
            "KeyConditionExpression": "#shard = :shard AND #deadline <= :due",
            "ExpressionAttributeNames": {"#shard": Attr.SHARD, "#deadline": Attr.DEADLINE},
            "ExpressionAttributeValues": {":shard": {"N": str(shard)}, ":due": {"S": due_before}},
            "Limit": limit,
        }
        if start:
            params["ExclusiveStartKey"] = start
        answer = self._client.query(**params)
        return [self._record(item) for item in answer.get("Items", [])], answer.get("LastEvaluatedKey")

    def list_by_status(self, status: str, limit: int, position: str | None) -> tuple[list[StatusRecord], str | None]:
        """Up to ``limit`` emails in ``status`` after ``position``, and the position to go on from (None at the end).

        Each status lists through the index that holds it best:
        - failed, bounced, complained, cancelled (``STATUS_INDEXED``): ``by-status``, newest first; the
          position is the last id shown.
        - scheduled and retrying (``TIMED``, always in ``by-deadline``): the next to be acted on first,
          by deadline; the position is ``"<deadline> <id>"``.
        - queued, sending, sent, delivered: ``by-arrival``, newest first, examining up to
          ``_LIST_SCAN_LIMIT`` emails a call; a page can hold fewer than ``limit`` and still have a
          position to go on from.
        """
        if status in STATUS_INDEXED:
            return self._list_by_status_index(status, limit, position)
        if status in TIMED:
            return self._list_by_deadline(status, limit, position)
        return self._list_by_arrival(status, limit, position)

    def _list_by_status_index(
        self, status: str, limit: int, before: str | None
    ) -> tuple[list[StatusRecord], str | None]:
        found: list[StatusRecord] = []
        for shard in range(self.settings.status_shards):
            params: dict[str, Any] = {
                "TableName": self.table,
                "IndexName": STATUS_INDEX,
                "KeyConditionExpression": "#status_shard = :shard",
                "ExpressionAttributeNames": {"#status_shard": Attr.STATUS_SHARD},
                "ExpressionAttributeValues": {":shard": {"S": f"{status}#{shard}"}},
                "ScanIndexForward": False,
                "Limit": limit + 1,
            }
            if before:
                params["KeyConditionExpression"] += " AND pk < :before"
                params["ExpressionAttributeValues"][":before"] = {"S": before}
            found.extend(self._record(item) for item in self._client.query(**params).get("Items", []))
        found.sort(key=lambda record: record.email_id, reverse=True)
        return found[:limit], (found[limit - 1].email_id if len(found) > limit else None)

    def _list_by_arrival(self, status: str, limit: int, before: str | None) -> tuple[list[StatusRecord], str | None]:
        found: list[StatusRecord] = []
        examined = 0
        while True:
            page = max(1, min(_GET_LIMIT, _LIST_SCAN_LIMIT - examined))
            heads = [self._newest_arrivals(shard, before, page) for shard in range(self.settings.deadline_shards)]
            # Every shard's ids above the highest last id of a shard with more were read: those are complete.
            bound = max((ids[-1] for ids, more in heads if more), default=None)
            candidates = sorted(
                (email_id for ids, _ in heads for email_id in ids if bound is None or email_id >= bound), reverse=True
            )
            records = self.records(candidates, consistent=False)
            for email_id in candidates:
                record = records.get(email_id)
                if record is not None and record.status == status:
                    found.append(record)
                    if len(found) == limit:
                        more = email_id != candidates[-1] or bound is not None
                        return found, (email_id if more else None)
            examined += len(candidates)
            if bound is None:
                return found, None
            before = candidates[-1]
            if examined >= _LIST_SCAN_LIMIT:
                return found, before

    def _list_by_deadline(self, status: str, limit: int, after: str | None) -> tuple[list[StatusRecord], str | None]:
        start = tuple(after.split(" ", 1)) if after else ("", "")
        found: list[tuple[str, str]] = []
        # The position up to which every shard was read; a shard cut short by the scan limit lowers it.
        complete: tuple[str, str] | None = None
        for shard in range(self.settings.deadline_shards):
            matches, last = self._due_with_status(shard, status, start, limit + 1)
            found.extend(matches)
            if last is not None and (complete is None or last < complete):
                complete = last
        found = sorted(position for position in found if complete is None or position <= complete)
        page = found[:limit]
        resume: str | None = None
        if len(found) > limit:
            resume = " ".join(page[-1])
        elif complete is not None:
            resume = " ".join(complete)
        records = self.records([email_id for _, email_id in page], consistent=False)
        return [records[email_id] for _, email_id in page if email_id in records], resume

    def _due_with_status(
        self, shard: int, status: str, start: tuple[str, ...], wanted: int
    ) -> tuple[list[tuple[str, str]], tuple[str, str] | None]:
        """(deadline, id) of up to ``wanted`` emails of ``shard`` in ``status`` after ``start``, by deadline,
        and the last position read when the shard was not read to its end."""
        found: list[tuple[str, str]] = []
        examined = 0
        params: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": DEADLINE_INDEX,
            "KeyConditionExpression": "#shard = :shard",
            "FilterExpression": "#status = :status",
            "ExpressionAttributeNames": {"#shard": Attr.SHARD, "#status": Attr.STATUS},
            "ExpressionAttributeValues": {":shard": {"N": str(shard)}, ":status": {"S": status}},
            "Limit": _GET_LIMIT,
        }
        if start[0]:
            params["KeyConditionExpression"] += " AND #deadline >= :start"
            params["ExpressionAttributeNames"]["#deadline"] = Attr.DEADLINE
            params["ExpressionAttributeValues"][":start"] = {"S": start[0]}
        while True:
            answer = self._client.query(**params)
            examined += int(answer.get("ScannedCount", 0))
            for item in answer.get("Items", []):
                position = (item[Attr.DEADLINE]["S"], item[Attr.PK]["S"])
                if position > start:
                    found.append(position)
            last_key = answer.get("LastEvaluatedKey")
            if not last_key:
                return found, None
            if len(found) >= wanted or examined >= _LIST_SCAN_LIMIT:
                return found, (last_key[Attr.DEADLINE]["S"], last_key[Attr.PK]["S"])
            params["ExclusiveStartKey"] = last_key

    def _newest_arrivals(self, shard: int, before: str | None, limit: int) -> tuple[list[str], bool]:
        params: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": ARRIVAL_INDEX,
            "KeyConditionExpression": "arrival_shard = :shard",
            "ExpressionAttributeValues": {":shard": {"N": str(shard)}},
            "ScanIndexForward": False,
            "Limit": limit,
        }
        if before:
            params["KeyConditionExpression"] += " AND pk < :before"
            params["ExpressionAttributeValues"][":before"] = {"S": before}
        answer = self._client.query(**params)
        return [item["pk"]["S"] for item in answer.get("Items", [])], "LastEvaluatedKey" in answer

    def arrivals(self, shard: int, after: str, until: str, limit: int) -> tuple[list[str], bool]:
        """Ids in ``by-arrival`` of ``shard`` above ``after`` and up to ``until``, oldest first, and whether
        there may be more."""
        params: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": ARRIVAL_INDEX,
            "KeyConditionExpression": "arrival_shard = :shard AND pk <= :until",
            "ExpressionAttributeValues": {":shard": {"N": str(shard)}, ":until": {"S": until}},
            "Limit": limit,
        }
        if after != SWEEP_START:
            params["ExclusiveStartKey"] = {"arrival_shard": {"N": str(shard)}, **self.key(after)}
        answer = self._client.query(**params)
        return [item["pk"]["S"] for item in answer.get("Items", [])], "LastEvaluatedKey" in answer

    def records(self, email_ids: list[str], consistent: bool) -> dict[str, StatusRecord]:
        """The status records that exist among ``email_ids``, by id (BatchGetItem, 100 a call)."""
        found = self._batch_get(email_ids, STATUS, None, consistent)
        return {email_id: StatusRecord.from_item(item) for email_id, item in found.items()}

    def sweep_cursor(self, shard: int) -> str:
        """The last id the sweep examined in ``shard``; ``SWEEP_START``, below every id, before the first sweep."""
        answer = self._client.get_item(
            TableName=self.table, Key=self.key(SWEEP, f"arrival#{shard}"), ConsistentRead=True
        )
        return str(answer["Item"]["swept_to"]["S"]) if "Item" in answer else SWEEP_START

    def advance_sweep(self, shard: int, to: str) -> None:
        """Move the sweep's cursor forward to ``to`` (never back: two runs at once may both advance it)."""
        with contextlib.suppress(self._client.exceptions.ConditionalCheckFailedException):
            self._client.update_item(
                TableName=self.table,
                Key=self.key(SWEEP, f"arrival#{shard}"),
                UpdateExpression="SET swept_to = :to",
                ConditionExpression="attribute_not_exists(swept_to) OR swept_to < :to",
                ExpressionAttributeValues={":to": {"S": to}},
            )

    def contents(self, email_ids: list[str], attributes: tuple[str, ...]) -> dict[str, dict[str, Any]]:
        """``attributes`` of the content records of ``email_ids`` that exist, by id (eventually consistent reads:
        a content record is written once, before its status record)."""
        return self._batch_get(email_ids, CONTENT, attributes, consistent=False)

    def _batch_get(
        self, email_ids: list[str], kind: str, attributes: tuple[str, ...] | None, consistent: bool
    ) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        pending = list(dict.fromkeys(email_ids))
        for start in range(0, len(pending), _GET_LIMIT):
            wanted: dict[str, Any] = {
                "Keys": [self.key(email_id, kind) for email_id in pending[start : start + _GET_LIMIT]],
                "ConsistentRead": consistent,
            }
            if attributes is not None:
                names = {f"#a{index}": name for index, name in enumerate(("pk", *attributes))}
                wanted["ProjectionExpression"] = ", ".join(names)
                wanted["ExpressionAttributeNames"] = names
            request: dict[str, Any] = {self.table: wanted}
            for attempt in range(_UNPROCESSED_RETRIES):
                answer = self._client.batch_get_item(RequestItems=request)
                for item in answer.get("Responses", {}).get(self.table, []):
                    record = self._decode(item)
                    found[str(record["pk"])] = record
                request = answer.get("UnprocessedKeys") or {}
                if not request:
                    break
                time.sleep(0.05 * 2**attempt)
            else:
                raise RuntimeError(f"DynamoDB left {len(request[self.table]['Keys'])} {kind} records unread")
        return found

    # --- conditional updates --------------------------------------------------------------------------

    def apply(self, email_id: str, guard: Guard, change: Change, now: datetime) -> StatusRecord:
        """Write ``change`` to the status record if ``guard`` holds: one conditional UpdateItem.

        Returns the new record; raises :class:`ConditionFailed` with the current one when the guard fails.
        """
        update = _Expression()
        # Named placeholders for the status and the guards: the request says what it does (the chaos run's
        # fault hooks and the bench's stubs read them).
        update.set(Attr.STATUS, change.to.value, "to")
        update.set(Attr.UPDATED_AT, clock.iso(now))
        entry = history_entry(change.to, now, change.reason)
        if change.history is not None:
            update.set(Attr.HISTORY, [*trimmed(change.history), entry])
        else:
            # The caller did not read the history: append, and the next sender outcome trims it.
            history = update.name(Attr.HISTORY)
            update.sets.append(
                f"{history} = list_append(if_not_exists({history}, {update.value([])}), {update.value([entry])})"
            )
        if change.to in STATUS_INDEXED:
            update.set(Attr.STATUS_SHARD, self.status_shard(email_id, change.to))
        else:
            update.remove(Attr.STATUS_SHARD)
        if change.deadline is not None:
            update.set(Attr.DEADLINE, clock.iso(change.deadline))
            update.remove(Attr.EXPIRES_AT)
            # An email once in by-deadline stays there while live: it never leaves the index early.
            if self.needs_deadline_index(email_id, change.to, change.deadline):
                update.set(Attr.SHARD, self.deadline_shard(email_id))
        else:
            update.remove(Attr.DEADLINE)
            update.remove(Attr.SHARD)
            update.set(Attr.EXPIRES_AT, clock.epoch(clock.after(now, self.settings.retention_days * 86400)))
        if change.attempts_delta:
            attempts = update.name(Attr.ATTEMPTS)
            update.sets.append(f"{attempts} = {attempts} + {update.value(change.attempts_delta)}")
        for attribute, value in change.set.items():
            update.set(attribute, value)
        for attribute, value in change.set_if_absent.items():
            name = update.name(attribute)
            update.sets.append(f"{name} = if_not_exists({name}, {update.value(value)})")
        for attribute in change.remove:
            update.remove(attribute)
        # The email's sequence counts every change, in the same write (see mailqueue.notifications); ADD starts
        # a record that has none (enqueued before sequences existed) from zero.
        update.adds.append(f"{update.name(Attr.SEQUENCE)} {update.value(1)}")

        statuses = [
            update.value(value, f"from{index}")
            for index, value in enumerate(sorted({Status(source).value for source in guard.statuses}))
        ]
        conditions = [f"{update.name(Attr.STATUS)} IN ({', '.join(statuses)})"]
        for attribute, operator, seen, name in (
            (Attr.CLAIM_TOKEN, "=", guard.claim_token, "claim_token"),
            (Attr.DEADLINE, "=", iso_or_none(guard.deadline), "seen_deadline"),
            (Attr.UPDATED_AT, "=", iso_or_none(guard.updated_at), "seen_updated_at"),
            (Attr.ATTEMPTS, "<", guard.attempts_below, "attempts_below"),
            (Attr.ATTEMPTS, ">=", guard.attempts_at_least, "attempts_at_least"),
        ):
            if seen is not None:
                conditions.append(f"{update.name(attribute)} {operator} {update.value(seen, name)}")
        if guard.history_below is not None:
            history_size = f"size({update.name(Attr.HISTORY)})"
            conditions.append(f"{history_size} < {update.value(guard.history_below, 'history_below')}")
        return self.update_status(email_id, update.text(), " AND ".join(conditions), update.names, update.values)

    def index_deadline(self, record: StatusRecord) -> tuple[bool, StatusRecord | None]:
        """Put a live email into ``by-deadline`` if it is still as ``record`` shows it (status and deadline).

        For the sweep meeting an email whose deadline has not passed (see :mod:`mailqueue.sweeping`).
        Returns whether it was put there, and when not, the email's current record.
        """
        try:
            self.update_status(
                record.email_id,
                "SET #shard = :shard",
                "#status = :status AND #deadline = :deadline",
                {"#shard": Attr.SHARD, "#status": Attr.STATUS, "#deadline": Attr.DEADLINE},
                {
                    ":shard": self.deadline_shard(record.email_id),
                    ":status": record.status.value,
                    ":deadline": iso_or_none(record.deadline),
                },
            )
        except ConditionFailed as failed:
            return False, failed.current
        return True, None

    def update_status(
        self, email_id: str, expression: str, condition: str, names: dict[str, str], values: dict[str, Any]
    ) -> StatusRecord:
        try:
            answer = self._client.update_item(
                TableName=self.table,
                Key=self.key(email_id),
                UpdateExpression=expression,
                ConditionExpression=f"attribute_exists(pk) AND {condition}",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues={key: self._ser.serialize(_to_dynamo_safe(v)) for key, v in values.items()},
                ReturnValues="ALL_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except self._client.exceptions.ConditionalCheckFailedException as error:
            old = getattr(error, "response", {}).get("Item")
            raise ConditionFailed(self._record(old) if old else None) from None
        return self._record(answer["Attributes"])

    def _record(self, item: dict[str, Any]) -> StatusRecord:
        """The status record of an item in DynamoDB's JSON."""
        return StatusRecord.from_item(self._decode(item))


class _Expression:
    """An UpdateExpression and its placeholders, built clause by clause."""

    def __init__(self) -> None:
        self.sets: list[str] = []
        self.removes: list[str] = []
        self.adds: list[str] = []
        self.names: dict[str, str] = {}
        self.values: dict[str, Any] = {}

    def name(self, attribute: str) -> str:
        placeholder = "#" + re.sub(r"\W", "_", attribute)
        self.names[placeholder] = attribute
        return placeholder

    def value(self, value: Any, name: str | None = None) -> str:
        """A placeholder for ``value``: ``:name`` when given (what a request's reader looks for), else numbered."""
        placeholder = f":{name}" if name else f":v{len(self.values)}"
        self.values[placeholder] = value
        return placeholder

    def set(self, attribute: str, value: Any, name: str | None = None) -> None:
        self.sets.append(f"{self.name(attribute)} = {self.value(value, name)}")

    def remove(self, attribute: str) -> None:
        self.removes.append(self.name(attribute))

    def text(self) -> str:
        # An attribute both set and removed (a caller's remove of what the change sets) is set.
        assigned = {clause.split(" = ", 1)[0] for clause in self.sets}
        removes = [name for name in dict.fromkeys(self.removes) if name not in assigned]
        text = "SET " + ", ".join(self.sets)
        if removes:
            text += " REMOVE " + ", ".join(removes)
        if self.adds:
            text += " ADD " + ", ".join(self.adds)
        return text


def decoded(item: dict[str, Any]) -> dict[str, Any]:
    """An item in DynamoDB's JSON (as a stream record holds it) as plain values, as the store reads items."""
    deserializer = _deserializer()
    result: dict[str, Any] = _from_dynamo_safe({key: deserializer.deserialize(value) for key, value in item.items()})
    return result


def _out_of_time(error: BaseException) -> bool:
    """True for the API's time budget refusing a call (see ``mailqueue.budget``): retrying cannot help."""
    return type(error).__name__ == "OutOfTime"


SUPPRESSION_PARTITION = "suppression"


class SuppressionList:
    """Addresses that bounced permanently or complained: one partition, one item per address.

    Writes are rare (a bounce, a complaint, an operator's lift); reads happen at every enqueue,
    one BatchGetItem for all the recipients of up to 100 emails.
    """

    _GET_LIMIT = 100

    def __init__(self, settings: Settings, client: Any) -> None:
        self.table = settings.table_name
        self._client = client
        self._ser = _serializer()
        self._de = _deserializer()

    def _key(self, address: str) -> dict[str, Any]:
        return {"pk": {"S": SUPPRESSION_PARTITION}, "sk": {"S": address}}

    def _decode(self, item: dict[str, Any]) -> dict[str, Any]:
        decoded: dict[str, Any] = _from_dynamo_safe({key: self._de.deserialize(value) for key, value in item.items()})
        return decoded

    def add(self, address: str, reason: str, at: str, email_id: str | None = None) -> None:
        item = {"pk": SUPPRESSION_PARTITION, "sk": address, "address": address, "reason": reason, "added_at": at}
        if email_id:
            item["email_id"] = email_id
        self._client.put_item(
            TableName=self.table, Item={key: self._ser.serialize(value) for key, value in item.items()}
        )

    def remove(self, address: str) -> bool:
        answer = self._client.delete_item(TableName=self.table, Key=self._key(address), ReturnValues="ALL_OLD")
        return "Attributes" in answer

    def find(self, addresses: set[str]) -> dict[str, dict[str, Any]]:
        """Which of ``addresses`` are suppressed, with why."""
        found: dict[str, dict[str, Any]] = {}
        pending = sorted(addresses)
        for start in range(0, len(pending), self._GET_LIMIT):
            keys = [self._key(address) for address in pending[start : start + self._GET_LIMIT]]
            request: dict[str, Any] = {self.table: {"Keys": keys}}
            for attempt in range(_UNPROCESSED_RETRIES):
                answer = self._client.batch_get_item(RequestItems=request)
                for item in answer.get("Responses", {}).get(self.table, []):
                    record = self._decode(item)
                    found[record["address"]] = record
                request = answer.get("UnprocessedKeys") or {}
                if not request:
                    break
                time.sleep(0.05 * 2**attempt)
            else:
                # An address left unread may be suppressed: refuse rather than send to it unchecked.
                raise Unavailable("mailqueue could not read its suppression list; nothing was accepted, try again")
        return found

    def page(self, limit: int, after: str | None = None) -> tuple[list[dict[str, Any]], str | None]:
        params: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": {":pk": {"S": SUPPRESSION_PARTITION}},
            "Limit": limit,
        }
        if after:
            params["ExclusiveStartKey"] = self._key(after)
        answer = self._client.query(**params)
        last = answer.get("LastEvaluatedKey")
        return [self._decode(item) for item in answer.get("Items", [])], (last["sk"]["S"] if last else None)
