"""The bench's arithmetic for a webhook: SQS requests, Lambda requests and duration per event per URL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import units
from bench.webhooks import costs, usage_per_event

PRICES = json.loads((Path(__file__).resolve().parents[2] / "bench" / "prices.json").read_text())


def case(size: int, duration_ms: float, own_calls: dict[str, float] | None = None) -> dict[str, object]:
    return {
        "events_per_invocation": size,
        "duration_ms_median": duration_ms,
        "function_calls_per_invocation": own_calls or {},
        "log_bytes_per_invocation": 200.0,
    }


def test_a_delivered_event_costs_the_send_and_its_share_of_the_batchs_receive_and_delete() -> None:
    usage = usage_per_event(case(10, 40.0, {"GetSecretValue": 0.1}), memory_mb=512)
    assert usage.sqs_requests == pytest.approx(1 + 2 / 10)  # EventBridge's send; receive and delete per batch
    assert usage.lambda_requests == pytest.approx(0.1)
    assert usage.lambda_gb_seconds == pytest.approx(0.5 * 0.040 / 10)
    assert usage.log_bytes == pytest.approx(20.0)
    alone = usage_per_event(case(1, 40.0), memory_mb=512)
    assert alone.sqs_requests == 3
    assert alone.lambda_requests == 1


def test_a_failed_attempt_costs_a_receive_and_its_visibility_change_not_a_send() -> None:
    usage = usage_per_event(case(10, 100.0, {"ChangeMessageVisibility": 10}), memory_mb=512, failed=True)
    assert usage.sqs_requests == pytest.approx((1 + 10) / 10)


def test_the_cost_per_million_prices_each_dimension() -> None:
    measured = {"memory_mb": 512, "cases": {"batches of 1": case(1, 10.0)}}
    table = costs(measured, PRICES)["usd_per_million_events_per_url"]["batches of 1"]
    assert table["SQS"] == pytest.approx(3 * units.price(PRICES, "sqs_standard_per_million_requests"))
    assert table["Lambda requests"] == pytest.approx(units.price(PRICES, "lambda_per_million_requests"))
    assert table["total"] == pytest.approx(sum(v for k, v in table.items() if k != "total"), abs=1e-3)
