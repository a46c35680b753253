"""The local stack with webhooks on, POSTing every status event to a receiver on 127.0.0.1.

A package of its own, after tests/e2e's stack has stopped (one local stack per process at a time): the
webhook function's invocations take turns with the others locally, and tests/e2e's timings do not pay
for them.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests
from mailqueue_dev.listen import WebhookReceiver
from mailqueue_dev.local import LocalStack

from tests.e2e.conftest import Http

# The local stack signs its webhooks with this secret (MAILQUEUE_WEBHOOK_SECRET).
WEBHOOK_SECRET = "e2e-webhook-secret"


@pytest.fixture(scope="package")
def webhook_receiver() -> Iterator[WebhookReceiver]:
    """A webhook receiver for the whole package: the local stack POSTs every status event to it.
    A test may change its ``answer`` (and must put it back), or stop and start it."""
    receiver = WebhookReceiver(secret=WEBHOOK_SECRET)
    with receiver:
        yield receiver


@pytest.fixture(scope="package")
def local(tmp_path_factory: pytest.TempPathFactory, webhook_receiver: WebhookReceiver) -> Iterator[LocalStack]:
    stack = LocalStack(
        api_port=0,
        emulator_port=0,
        outbox_dir=tmp_path_factory.mktemp("outbox"),
        requeue_seconds=0.5,
        poll_interval=0.05,
        parameters={"SendRate": "100"},
        environment={
            "BACKOFF_BASE_SECONDS": "1",
            "MAX_ATTEMPTS": "3",
            # Webhooks retried after 1 s, then 2 s, ten attempts in all (about 18 s); a receiver gets 2 s to answer.
            "WEBHOOK_BACKOFF_BASE_SECONDS": "1",
            "WEBHOOK_BACKOFF_MAX_SECONDS": "2",
            "WEBHOOK_ATTEMPTS": "10",
            "WEBHOOK_TIMEOUT_SECONDS": "2",
        },
        # SES's events for each accepted send: emails go on to delivered, bounced or failed, and are published.
        ses_events=True,
        state_dir=tmp_path_factory.mktemp("project") / ".mailqueue",
        webhook_url=webhook_receiver.url("/hooks"),
        webhook_secret=WEBHOOK_SECRET,
    )
    with stack:
        yield stack


@pytest.fixture(scope="package")
def http(local: LocalStack) -> Iterator[Http]:
    with requests.Session() as session:
        yield Http(local.api_url, session)
