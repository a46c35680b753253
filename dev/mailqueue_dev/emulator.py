"""moto in server mode on loopback: the AWS that the local stack and the integration tests talk to."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from mailqueue_dev.ses_simulator import SendRate, SendRateLimit

DEFAULT_REGION = "us-east-1"
FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "local",
    "AWS_SECRET_ACCESS_KEY": "local",
    "AWS_DEFAULT_REGION": DEFAULT_REGION,
    "AWS_REGION": DEFAULT_REGION,
}


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Emulator:
    host: str
    port: int
    server: Any
    # The account's maximum send rate that SES enforces here, when one is set (ses_simulator.SendRate).
    send_rate: SendRate | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def session(self) -> Any:
        import boto3  # noqa: PLC0415

        return boto3.session.Session(
            aws_access_key_id="local",
            aws_secret_access_key="local",  # noqa: S106 - the emulator accepts any credentials
            region_name=DEFAULT_REGION,
        )

    def client(self, service: str) -> Any:
        return self.session().client(service, endpoint_url=self.endpoint_url)

    def reset(self) -> None:
        """Forget every resource (moto's reset API)."""
        import requests  # noqa: PLC0415

        requests.post(f"{self.endpoint_url}/moto-api/reset", timeout=10)


def secret_of(access_key: str) -> str | None:
    """The secret key of an access key id that this process signs with: the emulator's own, or the one in
    the environment (the tests'). S3 checks a presigned POST's signature with it (see ``s3_post``)."""
    known = {FAKE_CREDENTIALS["AWS_ACCESS_KEY_ID"]: FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"]}
    if "AWS_ACCESS_KEY_ID" in os.environ and "AWS_SECRET_ACCESS_KEY" in os.environ:
        known[os.environ["AWS_ACCESS_KEY_ID"]] = os.environ["AWS_SECRET_ACCESS_KEY"]
    return known.get(access_key)


class AtomicDynamoDB:
    """One DynamoDB request at a time, as DynamoDB applies each write to an item atomically.

    moto's DynamoDB backend takes no lock, and its server runs each request on a thread of its own: two
    conditional writes to one item could both pass their condition, which DynamoDB never allows (the
    requeue function acts on a page with many threads, and runs may overlap). Serialising DynamoDB's
    requests costs little: moto's work holds the interpreter lock anyway.
    """

    def __init__(self, app: Any) -> None:
        self.app = app
        self.lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        if not str(environ.get("HTTP_X_AMZ_TARGET", "")).startswith("DynamoDB_"):
            return self.app(environ, start_response)
        with self.lock:
            # The whole answer is produced inside the lock: a WSGI app may do its work lazily.
            answer = list(self.app(environ, start_response))
            _forget_dynamodb_instances()
            return answer


def _forget_dynamodb_instances() -> None:
    """Drop moto's list of every DynamoDB model object it ever made.

    moto keeps each instance of its models for its dashboard (``instances_tracked``), and DynamoDB makes
    an item object for every item it writes, reads, queries or copies: a long-running emulator grew
    without bound (14 GB over the 2,000-email chaos run, most of it after the emails were done, as the
    requeue function's sweeps kept reading). The table itself holds what is stored; nothing but the
    dashboard reads these lists for DynamoDB.
    """
    from moto.core.model_instances import model_data  # noqa: PLC0415

    for model in model_data.get("dynamodb", {}).values():
        tracked = getattr(model, "instances_tracked", None)
        if tracked:
            tracked.clear()


@contextmanager
def running(host: str = "127.0.0.1", port: int | None = None, send_rate: SendRate | None = None) -> Iterator[Emulator]:
    """Start moto's threaded server, with S3's checks of POST uploads in front (see ``s3_post``); stop it on exit.

    With ``send_rate``, SES answers a SendEmail beyond the account's maximum send rate as SES v2 does
    (``TooManyRequestsException``, see ``ses_simulator.SendRate``); without it, SES takes every send.
    """
    from moto.moto_server.werkzeug_app import (  # noqa: PLC0415
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from moto.server import ThreadedMotoServer  # noqa: PLC0415
    from werkzeug.serving import make_server  # noqa: PLC0415

    from mailqueue_dev.s3_post import PostPolicy  # noqa: PLC0415

    class Server(ThreadedMotoServer):
        def _server_entry(self) -> None:
            app: Any = AtomicDynamoDB(PostPolicy(DomainDispatcherApplication(create_backend_app), secret_of))
            if send_rate is not None:
                app = SendRateLimit(app, send_rate)
            self._server = make_server(self._ip_address, self._port, app, True, request_handler=MotoRequestHandler)
            self._server_ready_event.set()
            self._server.serve_forever()

    server = Server(ip_address=host, port=port or free_port(host), verbose=False)
    server.start()
    try:
        yield Emulator(host=host, port=server._port, server=server, send_rate=send_rate)
    finally:
        server.stop()
