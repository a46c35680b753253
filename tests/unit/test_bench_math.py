"""The bench's arithmetic: DynamoDB item sizes and capacity units, SQS chunks, GB-seconds, cost per million."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import units
from bench.units import Index, Table, Usage

PRICES = json.loads((Path(__file__).resolve().parents[2] / "bench" / "prices.json").read_text())

EMAILS = Table(
    "emails",
    keys=("pk", "sk"),
    indexes=(
        Index("by-deadline", ("shard", "deadline"), "INCLUDE", ("status",)),
        Index("by-status", ("status_shard", "pk"), "INCLUDE", ("status",)),
    ),
)


def record(status: str, deadline: str | None, padding: int = 0) -> dict[str, dict[str, str]]:
    item = {
        "pk": {"S": "01JDQ3Z6W7X8Y9ZA0B1C2D3E4F"},
        "sk": {"S": "status"},
        "status": {"S": status},
        "status_shard": {"S": f"{status}#1"},
        "shard": {"N": "1"},
        "note": {"S": "x" * padding},
    }
    if deadline:
        item["deadline"] = {"S": deadline}
    return item


# --- item sizes ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("number", "size"),
    [("7", 2), ("12", 2), ("123", 3), ("1000", 2), ("0.0500", 2), ("-12.34", 3), ("1764130000", 4)],
)
def test_a_number_takes_one_byte_per_two_significant_digits_plus_one(number, size):
    assert units.number_size(number) == size


def test_an_item_is_the_sum_of_its_attribute_names_and_values():
    item = {
        "pk": {"S": "abc"},  # 2 + 3
        "n": {"N": "123"},  # 1 + 3
        "ok": {"BOOL": True},  # 2 + 1
        "b": {"B": b"\x00\x01"},  # 1 + 2
        "é": {"S": "é"},  # 2 + 2 (UTF-8)
    }

    assert units.item_size(item) == 5 + 4 + 3 + 3 + 4


def test_lists_and_maps_add_three_bytes_and_one_per_element():
    item = {
        "l": {"L": [{"S": "ab"}, {"N": "1"}]},  # 1 + 3 + (1 + 2) + (1 + 2)
        "m": {"M": {"k": {"S": "v"}}},  # 1 + 3 + (1 + 1 + 1)
    }

    assert units.item_size(item) == 10 + 7


def test_binary_values_count_their_raw_bytes_even_as_base64_text():
    assert units.value_size({"B": "AAECAw=="}) == 4


# --- capacity units ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("size", "wru"), [(0, 1), (1, 1), (1024, 1), (1025, 2), (2651, 3)])
def test_a_write_costs_one_unit_per_kilobyte_of_the_whole_item(size, wru):
    assert units.write_units(size) == wru


@pytest.mark.parametrize(
    ("size", "consistent", "rru"), [(0, True, 1.0), (4096, True, 1.0), (4097, True, 2.0), (2651, False, 0.5)]
)
def test_a_read_costs_one_unit_per_4_kb_strongly_consistent_half_eventually(size, consistent, rru):
    assert units.read_units(size, consistent) == rru


def test_a_new_item_is_one_put_in_the_table_and_in_each_index_that_holds_it():
    cost = units.write_cost(EMAILS, None, record("queued", "2026-11-26T10:15:00.000Z"))

    assert cost.table == 1
    assert cost.indexes == {"by-deadline": 1, "by-status": 1}
    assert cost.total == 3


def test_changing_an_index_key_is_a_delete_and_a_put_in_that_index():
    before = record("queued", "2026-11-26T10:15:00.000Z")
    after = record("sending", "2026-11-26T10:03:00.000Z")

    cost = units.write_cost(EMAILS, before, after)

    assert cost.indexes == {"by-deadline": 2, "by-status": 2}
    assert cost.total == 5


def test_removing_a_sparse_index_key_deletes_from_that_index_only():
    before = record("sending", "2026-11-26T10:03:00.000Z")
    after = record("sent", None)

    assert units.write_cost(EMAILS, before, after).indexes == {"by-deadline": 1, "by-status": 2}


def test_a_change_to_a_projected_attribute_alone_is_one_write_in_the_index():
    before = record("queued", "2026-11-26T10:15:00.000Z")
    after = {**before, "status": {"S": "sending"}}

    assert units.write_cost(EMAILS, before, after).indexes == {"by-deadline": 1, "by-status": 1}


def test_a_change_the_indexes_do_not_project_touches_no_index():
    before = record("queued", "2026-11-26T10:15:00.000Z")
    after = {**before, "note": {"S": "changed"}}

    assert units.write_cost(EMAILS, before, after).indexes == {}


def test_an_update_is_billed_on_the_larger_of_its_before_and_after_images():
    before = record("queued", "2026-11-26T10:15:00.000Z", padding=1500)
    after = {**before, "note": {"S": "short"}}

    assert units.write_cost(EMAILS, before, after).table == 2


def test_index_items_are_billed_on_their_projection_not_the_whole_item():
    big = record("queued", "2026-11-26T10:15:00.000Z", padding=2800)

    cost = units.write_cost(EMAILS, None, big)

    assert cost.table == 3
    assert cost.indexes == {"by-deadline": 1, "by-status": 1}


def test_a_failed_conditional_write_costs_the_item_it_checked_and_touches_no_index():
    cost = units.failed_write_cost(record("sent", None, padding=1500))

    assert (cost.table, cost.indexes) == (2, {})


def test_a_query_rounds_the_total_it_read_up_once():
    assert units.query_read_units([1000, 1000, 1000]) == 0.5
    assert units.query_read_units([3000, 3000]) == 1.0
    assert units.query_read_units([]) == 0.5


# --- SQS and Lambda ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("payload", "requests"), [(0, 1), (40, 1), (65536, 1), (65537, 2), (262144, 4)])
def test_each_64_kb_chunk_of_an_sqs_payload_is_one_request(payload, requests):
    assert units.sqs_requests(payload) == requests


def test_lambda_bills_memory_times_duration_rounded_up_to_the_millisecond():
    assert units.gb_seconds(512, 100.2) == pytest.approx(0.5 * 0.101)
    assert units.gb_seconds(1024, 1000) == pytest.approx(1.0)


# --- cost ----------------------------------------------------------------------------------------------------


def test_cost_per_million_multiplies_each_use_by_its_price():
    usage = Usage(
        api_requests=1,
        lambda_requests=2,
        lambda_gb_seconds=0.05,
        sqs_requests=3,
        dynamodb_wru=10,
        dynamodb_rru=2,
        log_bytes=1024**3 / 1_000_000,  # a GB per million emails
        xray_traces=0.1,
        eventbridge_events=2,
        status_events=3,
    )

    cost = units.cost_per_million(usage, PRICES)

    assert cost["API Gateway"] == pytest.approx(1.00)
    assert cost["Lambda requests"] == pytest.approx(0.40)
    assert cost["Lambda duration"] == pytest.approx(0.05 * 1_000_000 * 0.0000133334)
    assert cost["SQS"] == pytest.approx(1.20)
    assert cost["DynamoDB writes"] == pytest.approx(6.25)
    assert cost["DynamoDB reads"] == pytest.approx(0.25)
    assert cost["CloudWatch Logs"] == pytest.approx(0.50)
    assert cost["X-Ray"] == pytest.approx(0.50)
    assert cost["EventBridge"] == pytest.approx(2.00)
    assert cost["EventBridge status events"] == pytest.approx(3.00)  # custom events, $1.00 per million
    assert cost["S3"] == 0
    assert units.ses_cost_per_million(PRICES) == pytest.approx(100.0)


def test_usage_adds_and_scales_field_by_field():
    total = Usage(dynamodb_wru=6, sqs_requests=0.1) + Usage(dynamodb_wru=9, sqs_requests=0.2)

    assert total.dynamodb_wru == 15
    assert total.sqs_requests == pytest.approx(0.3)
    assert total.scaled(0.5).dynamodb_wru == 7.5


def test_every_price_in_the_table_names_its_source():
    assert PRICES["region"] == "us-east-1"
    assert PRICES["as_of"]
    for name, entry in PRICES["prices"].items():
        assert entry["usd"] > 0, name
        assert entry["source"].startswith("https://aws.amazon.com/"), name


def test_index_writes_are_counted_by_the_partition_key_value_they_go_to():
    before = record("queued", "2026-11-26T10:15:00.000Z")
    after = record("sending", "2026-11-26T10:03:00.000Z")

    cost = units.write_cost(EMAILS, before, after)

    assert cost.partitions == {"by-deadline": {"1": 2}, "by-status": {"queued#1": 1, "sending#1": 1}}


# --- what the template's logging and tracing settings cost -----------------------------------------------------


def _function(**properties: object) -> dict[str, object]:
    return {"Type": "AWS::Serverless::Function", "Properties": properties}


def test_lambda_writes_its_start_end_and_report_lines_only_below_a_warn_system_level():
    from bench.run import PLATFORM_BYTES, platform_log_bytes

    text = {"Globals": {"Function": {}}, "Resources": {"F": _function()}}
    json_warn = {
        "Globals": {"Function": {"LoggingConfig": {"LogFormat": "JSON", "SystemLogLevel": "WARN"}}},
        "Resources": {"F": _function()},
    }
    json_info = {
        "Globals": {"Function": {"LoggingConfig": {"LogFormat": "JSON", "SystemLogLevel": "INFO"}}},
        "Resources": {"F": _function()},
    }

    assert platform_log_bytes(text, "F") == PLATFORM_BYTES
    assert platform_log_bytes(json_warn, "F") == 0
    assert platform_log_bytes(json_info, "F") > PLATFORM_BYTES  # JSON records of the same three lines


def test_a_function_records_traces_at_the_sampling_rate_only_when_active_or_behind_a_traced_queue():
    from bench.run import trace_rate

    template = {
        "Globals": {"Function": {"Tracing": "PassThrough"}},
        "Resources": {
            "Api": _function(Tracing="Active"),
            "Sender": _function(Events={"Normal": {"Type": "SQS", "Properties": {}}}),
            "Events": _function(Events={"Ses": {"Type": "EventBridgeRule", "Properties": {}}}),
            "Untraced": _function(Tracing="Disabled"),
        },
    }

    assert trace_rate(template, "Api", 0.05) == 0.05
    # PassThrough traces what arrives sampled: SQS carries the traced API's header to the sender
    assert trace_rate(template, "Sender", 0.05) == 0.05
    # SES's events through EventBridge carry none
    assert trace_rate(template, "Events", 0.05) == 0
    assert trace_rate(template, "Untraced", 0.05) == 0


def test_each_record_the_notify_function_is_handed_is_one_status_event():
    from bench.lifecycle import NOTIFY, Invocation
    from bench.run import Selection, usage_of

    invocations = [Invocation(0, "delivery", NOTIFY, 40.0, 7, 0, 0), Invocation(1, "delivery", NOTIFY, 30.0, 3, 0, 0)]

    usage = usage_of(Selection([], invocations, 0), 10, {NOTIFY: 512}, {}, {}, 0)

    assert usage.status_events == pytest.approx(1.0)
    assert usage.lambda_requests == pytest.approx(0.2)
    assert usage.eventbridge_events == 0


def test_provisioned_capacity_prices_dynamodb_by_unit_hours_at_seventy_percent_use():
    usage = Usage(dynamodb_wru=6, dynamodb_rru=4, lambda_requests=2)
    on_demand = units.cost_per_million(usage, PRICES)

    provisioned = units.provisioned_cost_per_million(usage, PRICES)

    # A million write units at 70% of a provisioned unit: 1e6 / (3,600 x 0.7) unit-hours of $0.00065.
    assert provisioned["DynamoDB writes"] == pytest.approx(6 * 1e6 / 2520 * 0.00065)
    assert provisioned["DynamoDB reads"] == pytest.approx(4 * 1e6 / 2520 * 0.00013)
    assert provisioned["DynamoDB writes"] < on_demand["DynamoDB writes"]
    assert {k: v for k, v in provisioned.items() if not k.startswith("DynamoDB")} == {
        k: v for k, v in on_demand.items() if not k.startswith("DynamoDB")
    }


def test_the_sender_floor_builds_the_whole_bench_email_as_mime():
    from email import message_from_bytes, policy

    from bench.emails import typical_email
    from bench.probe import _stdlib_mime

    email = typical_email(7)
    message = message_from_bytes(_stdlib_mime(email), policy=policy.default)

    assert message["Subject"] == email["subject"]
    assert message["To"] == email["to"][0]
    text, html = message.iter_parts()
    assert text.get_content().replace("\r\n", "\n") == email["text"]
    assert html.get_content_type() == "text/html"
    assert html.get_content().replace("\r\n", "\n") == email["html"]
