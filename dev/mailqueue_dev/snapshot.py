"""The local stack's data across restarts: its tables and buckets, saved when it stops and loaded when it starts.

moto keeps everything in memory, and its server mode has no persistence of its own (its recorder replays
requests, which would send every email again). So the local stack copies out what a deployed stack
keeps for good, through the same APIs a user would call:

- every item of every table of the template (``Scan``), as DynamoDB JSON, one item a line;
- every object of every bucket (attachments uploaded ahead, large email content), with its content type.

Messages in SQS are not kept: a deployed queue keeps them, but the table is the truth, and each live email
has a deadline after which the requeue function publishes it again. Emails that were ``queued`` when the
stack stopped are published again as soon as it starts (:func:`republish_queued`), so nothing waits for
its deadline.
"""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mailqueue_dev.template import Stack

TABLES = "tables"
BUCKETS = "buckets"
MANIFEST = "manifest.json"


@dataclass
class Counts:
    items: int = 0
    objects: int = 0

    def __str__(self) -> str:
        return f"{self.items} items, {self.objects} objects"


def save(session: Any, endpoint_url: str, stack: Stack, directory: Path) -> Counts:
    """Copy every table item and bucket object into ``directory`` (replaced whole, never half-written)."""
    counts = Counts()
    partial = directory.with_name(directory.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    (partial / TABLES).mkdir(parents=True)
    dynamodb = session.client("dynamodb", endpoint_url=endpoint_url)
    for logical_id in stack.resources("AWS::DynamoDB::Table"):
        with (partial / TABLES / f"{logical_id}.jsonl").open("w", encoding="utf-8") as out:
            for item in _scan(dynamodb, stack.names[logical_id]):
                out.write(json.dumps(_encode(item)) + "\n")
                counts.items += 1
    s3 = session.client("s3", endpoint_url=endpoint_url)
    manifest: dict[str, dict[str, str]] = {}
    for logical_id in stack.resources("AWS::S3::Bucket"):
        bucket = stack.names[logical_id]
        folder = partial / BUCKETS / logical_id
        for number, key in enumerate(_keys(s3, bucket)):
            answer = s3.get_object(Bucket=bucket, Key=key)
            folder.mkdir(parents=True, exist_ok=True)
            (folder / str(number)).write_bytes(answer["Body"].read())
            manifest[f"{logical_id}/{number}"] = {"key": key, "content_type": answer.get("ContentType") or ""}
            counts.objects += 1
    (partial / MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")
    shutil.rmtree(directory, ignore_errors=True)
    partial.replace(directory)
    return counts


def restore(session: Any, endpoint_url: str, stack: Stack, directory: Path) -> Counts:
    """Put back what :func:`save` wrote into the (new, empty) tables and buckets of ``stack``."""
    counts = Counts()
    if not directory.is_dir():
        return counts
    dynamodb = session.client("dynamodb", endpoint_url=endpoint_url)
    for logical_id in stack.resources("AWS::DynamoDB::Table"):
        path = directory / TABLES / f"{logical_id}.jsonl"
        if not path.is_file():
            continue
        batch: list[dict[str, Any]] = []
        with path.open(encoding="utf-8") as lines:
            for line in lines:
                batch.append({"PutRequest": {"Item": _decode(json.loads(line))}})
                if len(batch) == 25:
                    counts.items += _write(dynamodb, stack.names[logical_id], batch)
                    batch = []
        if batch:
            counts.items += _write(dynamodb, stack.names[logical_id], batch)
    s3 = session.client("s3", endpoint_url=endpoint_url)
    manifest_path = directory / MANIFEST
    manifest = json.loads(manifest_path.read_text(encoding="utf-8")) if manifest_path.is_file() else {}
    for name, entry in manifest.items():
        logical_id = name.split("/", 1)[0]
        if logical_id not in stack.names:
            continue
        extra = {"ContentType": entry["content_type"]} if entry.get("content_type") else {}
        s3.put_object(
            Bucket=stack.names[logical_id], Key=entry["key"], Body=(directory / BUCKETS / name).read_bytes(), **extra
        )
        counts.objects += 1
    return counts


def queued_emails(session: Any, endpoint_url: str, table: str) -> Iterator[dict[str, Any]]:
    """The status records of emails that are ``queued`` (their SQS message was lost with the emulator)."""
    dynamodb = session.client("dynamodb", endpoint_url=endpoint_url)
    for item in _scan(
        dynamodb,
        table,
        FilterExpression="sk = :s AND #st = :q",
        ExpressionAttributeNames={"#st": "status"},
        ExpressionAttributeValues={":s": {"S": "status"}, ":q": {"S": "queued"}},
    ):
        yield {
            "id": item["pk"]["S"],
            "priority": item.get("priority", {}).get("S", "normal"),
            "send_at": item.get("send_at", {}).get("S"),
        }


def delay_until(send_at: str | None, now: datetime | None = None) -> int:
    """The SQS delay that still holds an email back until its send_at (0 when it is due)."""
    if not send_at:
        return 0
    moment = datetime.fromisoformat(send_at.replace("Z", "+00:00"))
    return max(0, min(900, int((moment - (now or datetime.now(UTC))).total_seconds())))


def _scan(client: Any, table: str, **kwargs: Any) -> Iterator[dict[str, Any]]:
    for page in client.get_paginator("scan").paginate(TableName=table, **kwargs):
        yield from page.get("Items", [])


def _keys(client: Any, bucket: str) -> Iterator[str]:
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for entry in page.get("Contents", []):
            yield str(entry["Key"])


def _write(client: Any, table: str, batch: list[dict[str, Any]]) -> int:
    pending: dict[str, list[dict[str, Any]]] = {table: batch}
    while pending:
        pending = client.batch_write_item(RequestItems=pending).get("UnprocessedItems") or {}
    return len(batch)


def _encode(value: Any) -> Any:
    """DynamoDB JSON as boto3 gives it, with binary values (B, BS) as base64 so that it is JSON."""
    if isinstance(value, bytes):
        return {"__b64__": base64.b64encode(value).decode()}
    if isinstance(value, dict):
        return {key: _encode(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_encode(item) for item in value]
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"__b64__"}:
            return base64.b64decode(value["__b64__"])
        return {key: _decode(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_decode(item) for item in value]
    return value
