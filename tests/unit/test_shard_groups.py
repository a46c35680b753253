"""The requeue function's runs in parallel, one per group of shards: together they cover every shard once.

Each of the template's schedules passes ``{"shard_group": g, "shard_groups": G}`` to the function; a run
reads the ``by-deadline`` shards and sweeps the ``by-arrival`` shards ``s`` with ``s % G == g``.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from mailqueue import aws, clock
from mailqueue.queue import SendQueue
from mailqueue.requeue import Requeuer
from mailqueue.settings import Settings, get_settings
from mailqueue.shardgroups import EVERY_SHARD, BadShardGroup, ShardGroup, shard_group_of
from mailqueue.store import EmailStore

from tests.conftest import ApiClient, an_email, load_handler

SAMPLE_EVENT = json.loads((Path(__file__).parents[2] / "events" / "requeue" / "scheduled.json").read_text())


def settings() -> Settings:
    return get_settings()


def store() -> EmailStore:
    return EmailStore(settings(), aws.client("dynamodb"))


def plenty() -> int:
    return 60_000


def published() -> list[str]:
    """The ids waiting in the normal send queue; the queue is left empty."""
    sqs = aws.client("sqs")
    url = settings().queue_url("normal")
    ids: list[str] = []
    while messages := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
        for message in messages:
            ids.append(json.loads(message["Body"])["id"])
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    return ids


def status_of(email_id: str) -> str:
    found = store().get(email_id)
    assert found is not None
    return found.status.value


def emails_in_every_shard(api: ApiClient, per_shard: int = 2, **overrides: Any) -> dict[int, list[str]]:
    """Accepted emails, at least ``per_shard`` in each deadline shard (ids fall in shards at random)."""
    by_shard: dict[int, list[str]] = {shard: [] for shard in range(settings().deadline_shards)}
    for _ in range(200):
        if all(len(ids) >= per_shard for ids in by_shard.values()):
            break
        status, body = api.post("/emails", an_email(**overrides))
        assert status == 202, body
        by_shard[store().deadline_shard(body["id"])].append(body["id"])
    assert all(len(ids) >= per_shard for ids in by_shard.values())
    published()
    return by_shard


def make_due(email_id: str, deadline: datetime) -> None:
    """The email's deadline passed, in by-deadline (as a scheduled email whose send_at came is)."""
    aws.client("dynamodb").update_item(
        TableName=settings().table_name,
        Key=EmailStore.key(email_id),
        UpdateExpression="SET #deadline = :deadline, #shard = :shard",
        ExpressionAttributeNames={"#deadline": "deadline", "#shard": "shard"},
        ExpressionAttributeValues={
            ":deadline": {"S": clock.iso(deadline)},
            ":shard": {"N": str(store().deadline_shard(email_id))},
        },
    )


def group_event(index: int, count: int) -> dict[str, Any]:
    """What EventBridge Scheduler hands the function for a schedule whose Input names the group."""
    return json.loads(json.dumps(ShardGroup(index, count).as_dict()))


# --- the groups cover every shard exactly once --------------------------------------------------------------


@pytest.mark.parametrize("shards", [1, 2, 3, 4, 5, 8, 16, 63, 64])
def test_the_groups_of_a_count_cover_every_shard_exactly_once(shards: int) -> None:
    for count in range(1, shards + 1):
        covered = Counter(shard for index in range(count) for shard in ShardGroup(index, count).shards(shards))
        assert covered == Counter(range(shards)), (shards, count)


def test_every_group_of_the_default_shards_holds_one_shard() -> None:
    shards = Settings().deadline_shards
    assert [ShardGroup(index, shards).shards(shards) for index in range(shards)] == [[s] for s in range(shards)]


def test_raising_the_shards_under_the_same_groups_still_covers_them_all() -> None:
    # 4 schedules, DEADLINE_SHARDS raised to 10: every group gets two or three shards
    assert [ShardGroup(index, 4).shards(10) for index in range(4)] == [[0, 4, 8], [1, 5, 9], [2, 6], [3, 7]]


# --- the event names the group ------------------------------------------------------------------------------


@pytest.mark.parametrize("event", [{}, SAMPLE_EVENT, {"detail": {}, "source": "aws.scheduler"}])
def test_an_event_that_names_no_group_runs_every_shard(event: dict[str, Any]) -> None:
    assert shard_group_of(event) == EVERY_SHARD
    assert EVERY_SHARD.shards(4) == [0, 1, 2, 3]


def test_the_schedule_input_names_its_group() -> None:
    assert shard_group_of({"shard_group": 2, "shard_groups": 4}) == ShardGroup(2, 4)


@pytest.mark.parametrize(
    ("event", "field", "reason"),
    [
        ({"shard_group": 1}, "shard_groups", "missing"),
        ({"shard_groups": 4}, "shard_group", "missing"),
        ({"shard_group": "1", "shard_groups": 4}, "shard_group", "whole number"),
        ({"shard_group": 1, "shard_groups": 4.0}, "shard_groups", "whole number"),
        ({"shard_group": True, "shard_groups": 4}, "shard_group", "whole number"),
        ({"shard_group": None, "shard_groups": 4}, "shard_group", "whole number"),
        ({"shard_group": 4, "shard_groups": 4}, "shard_group", "from 0 to"),
        ({"shard_group": -1, "shard_groups": 4}, "shard_group", "from 0 to"),
        ({"shard_group": 0, "shard_groups": 0}, "shard_groups", "from 1 to 64"),
        ({"shard_group": 0, "shard_groups": 65}, "shard_groups", "from 1 to 64"),
    ],
)
def test_a_bad_group_is_refused_naming_the_field_and_why(event: dict[str, Any], field: str, reason: str) -> None:
    with pytest.raises(BadShardGroup) as refused:
        shard_group_of(event)
    assert str(refused.value).startswith(field)
    assert reason in str(refused.value)


@pytest.mark.parametrize("event", [[0, 4], 2, "shard_group", None])
def test_an_input_that_is_not_an_object_is_refused(event: Any) -> None:
    with pytest.raises(BadShardGroup, match="the event must be a JSON object"):
        shard_group_of(event)


def test_a_group_that_holds_no_shard_is_refused_not_run_empty() -> None:
    # 8 schedules over 4 shards: groups 4 to 7 would read nothing, leaving no trace
    with pytest.raises(BadShardGroup, match="DEADLINE_SHARDS must be at least shard_groups"):
        ShardGroup(5, 8).shards(4)


# --- runs of each group, against moto -----------------------------------------------------------------------


def scheduled() -> dict[str, str]:
    return {"send_at": (clock.now() + timedelta(hours=2)).isoformat()}


def test_a_run_of_each_group_through_the_handler_releases_its_shards_and_only_those(api, context):
    groups = settings().deadline_shards
    by_shard = emails_in_every_shard(api, **scheduled())
    for email_id in (email_id for ids in by_shard.values() for email_id in ids):
        make_due(email_id, clock.now() - timedelta(minutes=1))
    handler = load_handler("requeue").handler

    released: set[str] = set()
    for index in range(groups):
        result = handler(group_event(index, groups), context.invocation())

        mine = {email_id for shard, ids in by_shard.items() if shard % groups == index for email_id in ids}
        assert result["shards"] == [shard for shard in by_shard if shard % groups == index]
        assert result["requeued_total"] == len(mine)
        assert Counter(published()) == Counter(mine)
        released |= mine
        # every other shard's due emails are left alone, for their own group's run
        for shard, ids in by_shard.items():
            for email_id in ids:
                assert status_of(email_id) == ("queued" if email_id in released else "scheduled"), (index, shard)
    assert released == {email_id for ids in by_shard.values() for email_id in ids}


def test_the_sweep_of_a_group_examines_its_shards_only(api):
    # Emails on their normal path (in by-arrival only) whose message was lost: the sweep finds them.
    by_shard = emails_in_every_shard(api, per_shard=1)
    everyone = [email_id for ids in by_shard.values() for email_id in ids]
    requeuer = Requeuer(settings(), store(), SendQueue(settings(), aws.client("sqs")))
    later = max(store().sweep_point(email_id) for email_id in everyone) + timedelta(seconds=1)
    groups = 2

    first = requeuer.run(plenty, now=later, group=ShardGroup(0, groups))

    mine = {email_id for shard, ids in by_shard.items() if shard % groups == 0 for email_id in ids}
    assert first.swept == len(mine)
    assert first.shards == [0, 2]
    cursors = {shard: store().sweep_cursor(shard) for shard in by_shard}
    assert all(cursors[shard] >= max(by_shard[shard]) for shard in (0, 2))
    assert all(cursors[shard] < min(by_shard[shard]) for shard in (1, 3))

    second = requeuer.run(plenty, now=later, group=ShardGroup(1, groups))

    assert second.swept == len(everyone) - len(mine)
    assert all(store().sweep_cursor(shard) >= max(ids) for shard, ids in by_shard.items())


def test_runs_of_every_group_side_by_side_release_each_due_email_once(api):
    by_shard = emails_in_every_shard(api, per_shard=3, **scheduled())
    everyone = [email_id for ids in by_shard.values() for email_id in ids]
    send_at = clock.now() + timedelta(hours=2, seconds=1)
    requeuer = Requeuer(settings(), store(), SendQueue(settings(), aws.client("sqs")))
    groups = settings().deadline_shards

    summaries = [requeuer.run(plenty, now=send_at, group=ShardGroup(index, groups)) for index in range(groups)]

    assert sum(summary.requeued_total for summary in summaries) == len(everyone)
    assert Counter(published()) == Counter(everyone)
    assert {status_of(email_id) for email_id in everyone} == {"queued"}


def test_the_handler_refuses_a_bad_group_before_touching_anything(api, context):
    by_shard = emails_in_every_shard(api, per_shard=1, **scheduled())
    for email_id in (email_id for ids in by_shard.values() for email_id in ids):
        make_due(email_id, clock.now() - timedelta(minutes=1))
    handler = load_handler("requeue").handler

    with pytest.raises(BadShardGroup, match="shard_groups is missing"):
        handler({"shard_group": 0}, context.invocation())
    with pytest.raises(BadShardGroup, match="holds none of the 4 shards"):
        handler(group_event(5, 8), context.invocation())

    assert published() == []
    assert {status_of(email_id) for ids in by_shard.values() for email_id in ids} == {"scheduled"}


def test_an_event_without_a_group_releases_every_shard_as_one_run_did(api, context):
    by_shard = emails_in_every_shard(api, per_shard=1, **scheduled())
    everyone = [email_id for ids in by_shard.values() for email_id in ids]
    for email_id in everyone:
        make_due(email_id, clock.now() - timedelta(minutes=1))

    result = load_handler("requeue").handler(SAMPLE_EVENT, context.invocation())

    assert result["shards"] == list(range(settings().deadline_shards))
    assert Counter(published()) == Counter(everyone)
