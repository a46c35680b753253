"""All SQS access: publishing email ids to the send queue of their priority.

A message carries only the email's id: the table is the truth, and a message for an email that
moved on is acknowledged and skipped by the sender.
"""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mailqueue.settings import Settings

_BATCH_LIMIT = 10
MAX_DELAY_SECONDS = 900
# How long a Backlog keeps GetQueueAttributes' answer: a sender asks at most once a second.
BACKLOG_TTL_SECONDS = 1.0


@dataclass(frozen=True)
class Publication:
    email_id: str
    priority: str = "normal"
    delay_seconds: int = 0


class SendQueue:
    def __init__(self, settings: Settings, client: Any) -> None:
        self.settings = settings
        self._client = client

    def publish(self, publications: list[Publication]) -> set[str]:
        """Publish each id to its priority's queue. Returns the ids whose publish failed.

        A failed publish loses nothing: the email is already stored with a deadline, and the
        requeue function publishes it when that passes.
        """
        by_queue: dict[str, list[Publication]] = defaultdict(list)
        for publication in publications:
            by_queue[self.settings.queue_url(publication.priority)].append(publication)
        failed: set[str] = set()
        for queue_url, items in by_queue.items():
            if len(items) == 1:
                failed |= self._send_one(queue_url, items[0])
                continue
            for start in range(0, len(items), _BATCH_LIMIT):
                failed |= self._send_batch(queue_url, items[start : start + _BATCH_LIMIT])
        return failed

    def _send_one(self, queue_url: str, item: Publication) -> set[str]:
        try:
            self._client.send_message(
                QueueUrl=queue_url, MessageBody=_body(item), DelaySeconds=_delay(item.delay_seconds)
            )
        except Exception:
            return {item.email_id}
        return set()

    def _send_batch(self, queue_url: str, items: list[Publication]) -> set[str]:
        entries = [
            {"Id": str(index), "MessageBody": _body(item), "DelaySeconds": _delay(item.delay_seconds)}
            for index, item in enumerate(items)
        ]
        try:
            answer = self._client.send_message_batch(QueueUrl=queue_url, Entries=entries)
        except Exception:
            return {item.email_id for item in items}
        return {items[int(failure["Id"])].email_id for failure in answer.get("Failed", [])}


def _body(item: Publication) -> str:
    return json.dumps({"id": item.email_id})


def _delay(seconds: int) -> int:
    return max(0, min(MAX_DELAY_SECONDS, int(seconds)))


def priority_of(queue_arn: str, settings: Settings) -> str:
    """The priority of the send queue an SQS record came from (its ``eventSourceARN``): high or normal."""
    name = queue_arn.rsplit(":", 1)[-1]
    high = settings.high_priority_queue_url.rstrip("/").rsplit("/", 1)[-1]
    return "high" if high and name == high else "normal"


class Backlog:
    """How much mail a send queue holds: messages waiting, or in flight (received by a sender, not yet
    deleted). Messages delayed until their ``send_at`` are not due, and not counted.

    One GetQueueAttributes call, its answer kept ``ttl`` seconds, so a sender asks at most once a second
    whatever its pace. When SQS cannot answer, the queue is taken as empty: a wrong guess costs SES
    throttles, which the sender absorbs (or, for the requeue function, a message published again that
    may not have been lost), while taking it as busy would stall mail on a guess.
    """

    _ATTRIBUTES = ("ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible")

    def __init__(
        self,
        client: Callable[[], Any],
        queue_url: str,
        ttl: float = BACKLOG_TTL_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        # The client is built on the first question: a container that never asks never pays for it.
        self._client = client
        self.queue_url = queue_url
        self.ttl = ttl
        self.monotonic = monotonic
        self.calls = 0
        self.failures = 0
        self._asked_at: float | None = None
        self._messages = 0
        # The requeue function asks from many threads at once: one asks SQS, the others wait for its answer
        # (without the lock, a thread could read the count of a question still in flight: zero).
        self._lock = threading.Lock()

    def has_mail(self) -> bool:
        return self.messages() > 0

    def messages(self) -> int:
        """The messages the queue holds, waiting or in flight (SQS's approximate counts)."""
        with self._lock:
            return self._messages_locked()

    def _messages_locked(self) -> int:
        now = self.monotonic()
        if self._asked_at is not None and now - self._asked_at < self.ttl:
            return self._messages
        self._asked_at = now
        self.calls += 1
        try:
            answer = self._client().get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=list(self._ATTRIBUTES))
        except Exception:
            self.failures += 1
            self._messages = 0
            return 0
        attributes = answer.get("Attributes", {})
        self._messages = sum(int(attributes.get(name, 0)) for name in self._ATTRIBUTES)
        return self._messages


def email_id_of_message(body: str) -> str:
    """The email id a send-queue message carries; raises ValueError for a foreign message."""
    try:
        email_id = json.loads(body)["id"]
    except (ValueError, KeyError, TypeError):
        raise ValueError("not a mailqueue message") from None
    if not isinstance(email_id, str):
        raise ValueError("not a mailqueue message")
    return email_id


class DeadLetterQueues:
    """How many messages each dead-letter queue holds: one GetQueueAttributes call per queue.

    SQS's counts are approximate (eventually consistent, as the queue's own metrics). A message someone
    is reading (in flight) is counted too: it stays a dead letter until it is deleted.
    """

    _ATTRIBUTES = ("ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible")

    def __init__(self, settings: Settings, client: Any) -> None:
        self.settings = settings
        self._client = client

    def counts(self) -> dict[str, int]:
        """Messages in each dead-letter queue, by the queue's name (send, high_priority, events)."""
        found: dict[str, int] = {}
        for name, url in self.settings.dead_letter_queue_urls().items():
            answer = self._client.get_queue_attributes(QueueUrl=url, AttributeNames=list(self._ATTRIBUTES))
            attributes = answer.get("Attributes", {})
            found[name] = sum(int(attributes.get(attribute, 0)) for attribute in self._ATTRIBUTES)
        return found
