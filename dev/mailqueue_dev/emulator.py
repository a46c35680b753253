"""moto in server mode on loopback: the AWS that the local stack and the integration tests talk to."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

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


@contextmanager
def running(host: str = "127.0.0.1", port: int | None = None) -> Iterator[Emulator]:
    """Start moto's threaded server; stop it on exit."""
    from moto.server import ThreadedMotoServer  # noqa: PLC0415

    server = ThreadedMotoServer(ip_address=host, port=port or free_port(host), verbose=False)
    server.start()
    try:
        yield Emulator(host=host, port=server._port, server=server)
    finally:
        server.stop()
