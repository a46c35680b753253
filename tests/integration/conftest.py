"""Integration fixtures: boto3 over real HTTP against moto in server mode on 127.0.0.1."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from mailqueue_dev.emulator import Emulator, running
from mailqueue_dev.template import Stack, build

from tests.conftest import ApiClient, configure


@pytest.fixture(scope="session")
def emulator() -> Iterator[Emulator]:
    with running() as server:
        yield server


@pytest.fixture
def server_stack(emulator: Emulator) -> Iterator[Stack]:
    """A fresh stack in the emulator; the handlers reach it through AWS_ENDPOINT_URL, as locally."""
    emulator.reset()
    os.environ["AWS_ENDPOINT_URL"] = emulator.endpoint_url
    session = emulator.session()
    built = build(session)
    emulator.client("sesv2").create_email_identity(EmailIdentity="example.com")
    emulator.client("ses").verify_domain_identity(Domain="example.com")
    configure(built)
    try:
        yield built
    finally:
        os.environ.pop("AWS_ENDPOINT_URL", None)
        configure(built)


@pytest.fixture
def server_api(server_stack: Stack, context) -> ApiClient:  # type: ignore[no-untyped-def]
    return ApiClient(context)
