"""End-to-end fixtures: the whole local stack (``make dev``) on free ports, driven over real HTTP."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import pytest
import requests
from mailqueue_dev.local import LocalStack

from tests.conftest import Verbs

T = TypeVar("T")


@pytest.fixture(scope="package")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """One local stack for the e2e package, stopped before other tests run (it sets AWS_ENDPOINT_URL)."""
    stack = LocalStack(
        api_port=0,
        emulator_port=0,
        outbox_dir=tmp_path_factory.mktemp("outbox"),
        requeue_seconds=0.5,
        poll_interval=0.05,
        # Fast enough that a batch of 100 goes out in about a second; retries after about a second.
        parameters={"SendRate": "100"},
        # Three attempts: an email SES keeps refusing is failed within seconds.
        environment={"BACKOFF_BASE_SECONDS": "1", "MAX_ATTEMPTS": "3"},
        # SES's events for each accepted send: emails go on to delivered, bounced or complained.
        ses_events=True,
        # A project directory of its own: the stack says where it runs in <project>/.mailqueue/stack.json.
        state_dir=tmp_path_factory.mktemp("project") / ".mailqueue",
    )
    with stack:
        yield stack


@pytest.fixture(scope="package")
def http(local: LocalStack) -> Iterator[Http]:
    with requests.Session() as session:
        yield Http(local.api_url, session)


class Http(Verbs):
    """The API over HTTP, as any client would call it."""

    def __init__(self, url: str, session: requests.Session) -> None:
        self.url = url
        self.session = session

    def request(self, method: str, path: str, body: Any = None, **kwargs: Any) -> tuple[int, Any]:
        response = self.session.request(method, f"{self.url}{path}", json=body, timeout=30, **kwargs)
        return response.status_code, response.json() if response.content else None


@pytest.fixture
def dynamodb(local: LocalStack) -> Any:
    """A plain boto3 client on the emulator: the table as a user reviewing it would see it."""
    assert local.emulator is not None
    return local.emulator.client("dynamodb")


@pytest.fixture
def table(local: LocalStack) -> str:
    assert local.stack is not None
    return local.stack.names["EmailsTable"]


# How long a test waits for a hundred emails to be delivered: a bound on a hang, not a speed claim (the
# tests never assert on wall-clock time). On two pytest workers of a 2-core machine, each worker's stack
# and emulator share one core, and a hundred emails take 30 to 45 s there.
BULK_DELIVERY_TIMEOUT = 120.0


def wait_for(condition: Callable[[], T], what: str, timeout: float = 30.0, interval: float = 0.1) -> T:
    """Poll until ``condition()`` returns something truthy; fail saying what never happened."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(interval)


def status_item(dynamodb: Any, table: str, email_id: str) -> dict[str, Any] | None:
    item: dict[str, Any] | None = dynamodb.get_item(
        TableName=table, Key={"pk": {"S": email_id}, "sk": {"S": "status"}}, ConsistentRead=True
    ).get("Item")
    return item


def statuses(dynamodb: Any, table: str, ids: list[str]) -> dict[str, str]:
    """The status of each email, read from the table (not through the API, which takes turns with the functions)."""
    found: dict[str, str] = {}
    for start in range(0, len(ids), 100):
        keys = [{"pk": {"S": email_id}, "sk": {"S": "status"}} for email_id in ids[start : start + 100]]
        items = dynamodb.batch_get_item(
            RequestItems={
                table: {"Keys": keys, "ProjectionExpression": "pk, #s", "ExpressionAttributeNames": {"#s": "status"}}
            }
        )["Responses"][table]
        found.update({item["pk"]["S"]: item["status"]["S"] for item in items})
    return found


def all_in(dynamodb: Any, table: str, ids: list[str], status: str) -> bool:
    found = statuses(dynamodb, table, ids)
    return len(found) == len(ids) and set(found.values()) == {status}


def outbox_file(local: LocalStack, email_id: str) -> Path:
    return Path(local.outbox_dir) / f"{email_id}.eml"


def an_email(**overrides: Any) -> dict[str, Any]:
    email: dict[str, Any] = {
        "from": "Shop <app@example.com>",
        "to": ["alice@example.org"],
        "subject": f"Receipt {uuid.uuid4().hex[:8]}",
        "text": "Thanks for your order.",
    }
    email.update(overrides)
    return email


def status_of(http: Http, email_id: str) -> str:
    code, body = http.get(f"/emails/{email_id}")
    assert code == 200, body
    return str(body["status"])


def wait_for_status(http: Http, email_id: str, wanted: str, timeout: float = 30.0) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        code, body = http.get(f"/emails/{email_id}")
        assert code == 200, body
        return body if body["status"] == wanted else None

    return wait_for(reached, f"{email_id} to be {wanted}", timeout)


def parse_eml(local: LocalStack, email_id: str) -> EmailMessage:
    message = message_from_bytes(outbox_file(local, email_id).read_bytes(), policy=policy.default)
    assert isinstance(message, EmailMessage)
    return message


@pytest.fixture
def lift(http: Http) -> Iterator[list[str]]:
    """Addresses a test puts on the suppression list, lifted after it whatever happened."""
    addresses: list[str] = []
    yield addresses
    for address in addresses:
        http.delete(f"/suppressions/{quote(address, safe='@')}")
