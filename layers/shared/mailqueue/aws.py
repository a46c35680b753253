"""AWS clients, created once per container and only when first needed.

boto3 reads the region and, locally, ``AWS_ENDPOINT_URL`` from the environment: the same code talks
to AWS on Lambda and to the emulator on a laptop.
"""

from __future__ import annotations

from functools import cache
from typing import Any

# Lambda functions reach only AWS APIs: fail fast rather than hold an invocation on a dead socket.
# Attempts are few and reads short so that an API call's retries end well inside the function's
# timeout (a function killed after storing an email but before answering invites a client retry).
_TIMEOUTS = {"connect_timeout": 3, "read_timeout": 10, "tcp_keepalive": True}
_FAST = {"connect_timeout": 2, "read_timeout": 5, "tcp_keepalive": True}
# A failed publish loses nothing (the email's deadline brings it back), so SQS gets one retry.
_ATTEMPTS = {"dynamodb": 3, "sqs": 2, "s3": 3}
# Connections kept per client: the requeue function acts on up to 64 emails at once (REQUEUE_CONCURRENCY),
# and a thread finding the pool (botocore's default: 10) full opens a connection and drops it afterwards.
_POOL = 64


@cache
def client(service: str) -> Any:
    from botocore.config import Config  # noqa: PLC0415

    if service == "sesv2":
        # botocore must never resend an email by itself: a retry after a timeout can send it twice.
        # The state machine owns retries (see ``sending``).
        config = Config(retries={"total_max_attempts": 1, "mode": "standard"}, **_TIMEOUTS)
    elif service in {"dynamodb", "sqs"}:
        config = Config(
            retries={"total_max_attempts": _ATTEMPTS[service], "mode": "standard"},
            # The requests are the store's and the queue's own, of fixed shapes: the service checks them
            # anyway, and botocore's check of each one was a fifth of the sender's CPU per email.
            parameter_validation=False,
            max_pool_connections=_POOL,
            **_FAST,
        )
    elif service == "s3":
        # Presigned uploads signed with Signature Version 4, the only one S3 takes for buckets made since 2020
        # (botocore would otherwise presign with version 2).
        config = Config(
            retries={"total_max_attempts": _ATTEMPTS[service], "mode": "standard"},
            signature_version="s3v4",
            **_TIMEOUTS,
        )
    else:
        config = Config(retries={"total_max_attempts": _ATTEMPTS.get(service, 3), "mode": "standard"}, **_TIMEOUTS)
    return _session().client(service, config=config)


@cache
def _session() -> Any:
    """One session per container: its clients share the loaded service models."""
    import boto3  # noqa: PLC0415

    return boto3.session.Session()


def forget() -> None:
    """Drop the cached clients and their session, credentials included: the next client is built from the
    environment as it is then (the tests and the local stack change it; Lambda never does)."""
    client.cache_clear()
    _session.cache_clear()
