"""The emulated DynamoDB applies each conditional write atomically, as DynamoDB does, over real HTTP.

moto's backend takes no lock and its server runs requests on threads: without the emulator's own
serialisation, two conditional writes to one item can both pass their condition (the requeue function
acts on a page with many threads, and two runs may overlap).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.config import Config
from mailqueue_dev.emulator import Emulator, running
from moto.dynamodb.models.dynamo_type import Item

WRITERS = 16
ROUNDS = 40


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    with running() as emulator:
        yield emulator


def test_of_many_racing_conditional_writes_to_one_item_exactly_one_wins(emulator: Emulator) -> None:
    client = emulator.session().client(
        "dynamodb", endpoint_url=emulator.endpoint_url, config=Config(max_pool_connections=WRITERS)
    )
    client.create_table(
        TableName="race",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for round_number in range(ROUNDS):
            key = {"pk": {"S": f"email-{round_number}"}}
            client.put_item(TableName="race", Item={**key, "status": {"S": "queued"}})
            start = threading.Barrier(WRITERS)
            winners: list[int] = []

            def claim(
                writer: int,
                key: dict[str, Any] = key,
                start: threading.Barrier = start,
                winners: list[int] = winners,
            ) -> None:
                start.wait()
                try:
                    client.update_item(
                        TableName="race",
                        Key=key,
                        UpdateExpression="SET #s = :sending, claimed_by = :me",
                        ConditionExpression="#s = :queued",
                        ExpressionAttributeNames={"#s": "status"},
                        ExpressionAttributeValues={
                            ":sending": {"S": "sending"},
                            ":queued": {"S": "queued"},
                            ":me": {"N": str(writer)},
                        },
                    )
                except client.exceptions.ConditionalCheckFailedException:
                    return
                winners.append(writer)

            threads = [threading.Thread(target=claim, args=(writer,)) for writer in range(WRITERS)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert len(winners) == 1, f"round {round_number}: {len(winners)} writers passed one condition"
    finally:
        sys.setswitchinterval(switch)


def test_the_emulator_keeps_no_copy_of_the_items_it_served(emulator: Emulator) -> None:
    """moto tracks every model object it makes; the emulator drops DynamoDB's, or a long run grows without bound."""
    client = emulator.session().client("dynamodb", endpoint_url=emulator.endpoint_url)
    client.create_table(
        TableName="kept",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    for number in range(50):
        client.put_item(TableName="kept", Item={"pk": {"S": f"email-{number}"}, "body": {"S": "x" * 100}})
    for _ in range(20):
        assert len(client.scan(TableName="kept")["Items"]) == 50

    # 1,050 item objects made (50 writes, 20 scans of 50): none kept beyond the table's own
    assert Item.instances_tracked == []  # type: ignore[attr-defined]
    assert client.get_item(TableName="kept", Key={"pk": {"S": "email-7"}})["Item"]["body"]["S"] == "x" * 100
