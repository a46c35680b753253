"""AWS clients, created once per container and only when first needed.

boto3 reads the region and, locally, ``AWS_ENDPOINT_URL`` from the environment: the same code talks
to AWS on Lambda and to the emulator on a laptop.
"""

from __future__ import annotations

from functools import cache
from typing import Any

# Lambda functions reach only AWS APIs: fail fast rather than hold an invocation on a dead socket.
_TIMEOUTS = {"connect_timeout": 3, "read_timeout": 10, "tcp_keepalive": True}


@cache
def client(service: str) -> Any:
    import boto3  # noqa: PLC0415 - imported on first use, off the cold-start path of what does not need it
    from botocore.config import Config  # noqa: PLC0415

    if service == "sesv2":
        # botocore must never resend an email by itself: a retry after a timeout can send it twice.
        # The state machine owns retries (see ``sending``).
        config = Config(retries={"total_max_attempts": 1, "mode": "standard"}, **_TIMEOUTS)
    else:
        config = Config(retries={"max_attempts": 4, "mode": "standard"}, **_TIMEOUTS)
    return _session().client(service, config=config)


@cache
def _session() -> Any:
    """One session per container: its clients share the loaded service models."""
    import boto3  # noqa: PLC0415

    return boto3.session.Session()
