"""Bring the status records of a table written before ``by-arrival`` existed into the indexes as they are now.

    python -m mailqueue_dev.migrate --stack mailqueue            # or --table <the Emails table's name>

Emails enqueued before the upgrade need nothing to be sent, retried or released: every live one of them
carries ``shard``, so ``by-deadline`` holds it, and the requeue function acts on it after its deadline as
before (a live email never leaves that index). What they miss is ``arrival_shard``, so the lists of
queued, sending, sent and delivered emails (read through ``by-arrival``) do not show them. This scan
gives each status record without one its ``arrival_shard``, and takes ``status_shard`` away from those
whose status no longer lists through ``by-status``. Each write is conditional on the record still
lacking ``arrival_shard``, so the scan can run while mailqueue runs, and again: a second run changes
nothing. It costs one read of the table and about two write units per old record.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mailqueue.ids import is_email_id, shard_of
from mailqueue.settings import Settings
from mailqueue.store import STATUS, STATUS_INDEXED


@dataclass
class Migrated:
    scanned: int = 0
    updated: int = 0


def migrate(client: Any, table: str, arrival_shards: int) -> Migrated:
    """Give every status record of ``table`` lacking ``arrival_shard`` its own (see the module's docstring)."""
    done = Migrated()
    paginator = client.get_paginator("scan")
    pages = paginator.paginate(
        TableName=table,
        FilterExpression="sk = :status AND attribute_not_exists(arrival_shard)",
        ExpressionAttributeValues={":status": {"S": STATUS}},
        ProjectionExpression="pk, #status",
        ExpressionAttributeNames={"#status": "status"},
    )
    for page in pages:
        done.scanned += int(page.get("ScannedCount", 0))
        for item in page.get("Items", []):
            email_id = item["pk"]["S"]
            if not is_email_id(email_id):
                continue
            expression = "SET arrival_shard = :shard"
            if item.get("status", {}).get("S") not in STATUS_INDEXED:
                expression += " REMOVE status_shard"
            try:
                client.update_item(
                    TableName=table,
                    Key={"pk": {"S": email_id}, "sk": {"S": STATUS}},
                    UpdateExpression=expression,
                    ConditionExpression="attribute_exists(pk) AND attribute_not_exists(arrival_shard)",
                    ExpressionAttributeValues={":shard": {"N": str(shard_of(email_id, arrival_shards))}},
                )
            except client.exceptions.ConditionalCheckFailedException:
                continue  # given one since the scan read it, or expired
            done.updated += 1
    return done


def main(argv: Sequence[str] | None = None) -> int:
    import boto3  # noqa: PLC0415

    parser = argparse.ArgumentParser(prog="python -m mailqueue_dev.migrate", description=__doc__.splitlines()[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--stack", help="a deployed mailqueue stack's name: its EmailsTable is migrated")
    where.add_argument("--table", help="the Emails table's name")
    parser.add_argument(
        "--shards",
        type=int,
        default=Settings().deadline_shards,
        help="the functions' DEADLINE_SHARDS, which by-arrival uses as well (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    session = boto3.session.Session()
    table = args.table
    if args.stack:
        table = session.client("cloudformation").describe_stack_resource(
            StackName=args.stack, LogicalResourceId="EmailsTable"
        )["StackResourceDetail"]["PhysicalResourceId"]
    done = migrate(session.client("dynamodb"), table, args.shards)
    print(f"{table}: {done.scanned} items scanned, {done.updated} status records given arrival_shard")
    return 0


if __name__ == "__main__":
    sys.exit(main())
