"""All DynamoDB access: the status record, the content record, and the indexes that read them.

Each email is two items under one partition key (its id):
- ``sk = "status"``: the small record that every transition rewrites (status, attempts, deadline,
  history, a readable summary). It stays well under 1 KB, since DynamoDB bills a write by the item.
- ``sk = "content"``: what the sender renders (addresses, subject, bodies, headers, attachments),
  written once at enqueue and read once per attempt; compressed when that saves write units
  (:mod:`mailqueue.packing`), in S3 when too large for an item.

Indexes, both projecting only what their query returns:
- ``by-deadline`` (``shard``, ``deadline``): sparse, holding live emails only; the requeue function
  reads what is due, shard by shard.
- ``by-status`` (``status_shard``, ``pk``): listing by status, newest first (ids are ULIDs),
  write-sharded so that a busy status is not one hot partition.
"""

from __future__ import annotations

import contextlib
import time
from decimal import Decimal
from typing import Any

from mailqueue.errors import Unavailable
from mailqueue.ids import shard_of
from mailqueue.settings import Settings

STATUS = "status"
CONTENT = "content"
# The item binding an idempotency key to the ids of the emails it created.
IDS = "ids"
# The status record's attribute holding the Idempotency-Key an email was enqueued with, when it was.
IDEMPOTENCY_KEY = "idempotency_key"
DEADLINE_INDEX = "by-deadline"
STATUS_INDEX = "by-status"
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

    def __init__(self, current: dict[str, Any] | None) -> None:
        super().__init__(f"condition failed; current status: {(current or {}).get('status')}")
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

    @staticmethod
    def key(email_id: str, kind: str = STATUS) -> dict[str, Any]:
        return {"pk": {"S": email_id}, "sk": {"S": kind}}

    # --- writing new emails ---------------------------------------------------------------------------

    def put_new(self, records: list[tuple[dict[str, Any], dict[str, Any]]]) -> set[str]:
        """Write (status, content) pairs; returns the ids that could not be written.

        Contents go first, then the status records of the emails whose content landed: a status
        record never exists without its content, and a content item left alone by a failed status
        write expires by its TTL, never sent.
        """
        contents = {status["pk"]: content for status, content in records}
        failed = self._batch_put(list(contents.values()))
        statuses = [status for status, _ in records if status["pk"] not in failed]
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

    def existing(self, email_ids: list[str]) -> dict[str, dict[str, Any]]:
        """The status records that exist among ``email_ids`` (strongly consistent reads)."""
        found: dict[str, dict[str, Any]] = {}
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

    def get(self, email_id: str, kind: str = STATUS, consistent: bool = True) -> dict[str, Any] | None:
        answer = self._client.get_item(TableName=self.table, Key=self.key(email_id, kind), ConsistentRead=consistent)
        return self._decode(answer["Item"]) if "Item" in answer else None

    def query_due(
        self, shard: int, due_before: str, limit: int, start: dict[str, Any] | None = None
    ) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        """Live emails of one shard whose deadline is at or before ``due_before``, earliest first."""
        params: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": DEADLINE_INDEX,
            "KeyConditionExpression": "#shard = :shard AND #deadline <= :due",
            "ExpressionAttributeNames": {"#shard": "shard", "#deadline": "deadline"},
            "ExpressionAttributeValues": {":shard": {"N": str(shard)}, ":due": {"S": due_before}},
            "Limit": limit,
        }
        if start:
            params["ExclusiveStartKey"] = start
        answer = self._client.query(**params)
        return [self._decode(item) for item in answer.get("Items", [])], answer.get("LastEvaluatedKey")

    def list_by_status(self, status: str, limit: int, before_id: str | None) -> list[dict[str, Any]]:
        """The newest ``limit`` emails in ``status`` older than ``before_id``, merged across shards."""
        found: list[dict[str, Any]] = []
        for shard in range(self.settings.status_shards):
            params: dict[str, Any] = {
                "TableName": self.table,
                "IndexName": STATUS_INDEX,
                "KeyConditionExpression": "status_shard = :shard",
                "ExpressionAttributeValues": {":shard": {"S": f"{status}#{shard}"}},
                "ScanIndexForward": False,
                "Limit": limit,
            }
            if before_id:
                params["KeyConditionExpression"] += " AND pk < :before"
                params["ExpressionAttributeValues"][":before"] = {"S": before_id}
            found.extend(self._decode(item) for item in self._client.query(**params).get("Items", []))
        found.sort(key=lambda item: item["pk"], reverse=True)
        return found[:limit]

    def contents(self, email_ids: list[str], attributes: tuple[str, ...]) -> dict[str, dict[str, Any]]:
        """``attributes`` of the content records of ``email_ids`` that exist, by id (eventually consistent reads:
        a content record is written once, before its status record)."""
        found: dict[str, dict[str, Any]] = {}
        pending = list(dict.fromkeys(email_ids))
        names = {f"#a{index}": name for index, name in enumerate(("pk", *attributes))}
        for start in range(0, len(pending), _GET_LIMIT):
            request: dict[str, Any] = {
                self.table: {
                    "Keys": [self.key(email_id, CONTENT) for email_id in pending[start : start + _GET_LIMIT]],
                    "ProjectionExpression": ", ".join(names),
                    "ExpressionAttributeNames": names,
                }
            }
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
                raise RuntimeError(f"DynamoDB left {len(request[self.table]['Keys'])} content records unread")
        return found

    # --- conditional updates --------------------------------------------------------------------------

    def update_status(
        self, email_id: str, expression: str, condition: str, names: dict[str, str], values: dict[str, Any]
    ) -> dict[str, Any]:
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
            raise ConditionFailed(self._decode(old) if old else None) from None
        return self._decode(answer["Attributes"])


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
