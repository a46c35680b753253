"""`mailqueue listen`: a receiver on 127.0.0.1 that verifies each webhook's signature and prints each event."""

from __future__ import annotations

import io
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from mailqueue.webhooks import LOCAL_SECRET, SIGNATURE_HEADER, sign
from mailqueue_dev import cli, listen
from mailqueue_dev.emulator import free_port


class Listening:
    def __init__(self, port: int, out: io.StringIO, err: io.StringIO) -> None:
        self.port, self.out, self.err = port, out, err

    def post(self, body: bytes, signature: str | None) -> int:
        headers = {"Content-Type": "application/json"}
        if signature is not None:
            headers[SIGNATURE_HEADER] = signature
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/hooks", data=body, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=5) as answer:
                return int(answer.status)
        except urllib.error.HTTPError as error:
            return int(error.code)


def run_cli(argv: list[str], stop: threading.Event, out: io.StringIO, err: io.StringIO) -> threading.Thread:
    """`mailqueue <argv>` on a thread; ``stop`` ends the listener as Ctrl-C would."""
    original = listen.listen

    def stoppable(*args: object, **kwargs: object) -> int:
        return original(*args, **{**kwargs, "stop": stop})  # type: ignore[arg-type]

    thread = threading.Thread(target=lambda: cli.main(argv, out=out, err=err), daemon=True)
    listen.listen = stoppable  # type: ignore[assignment]
    thread.start()
    return thread


@pytest.fixture
def listening(monkeypatch: pytest.MonkeyPatch) -> Iterator[Listening]:
    monkeypatch.delenv("MAILQUEUE_WEBHOOK_SECRET", raising=False)
    port, stop = free_port(), threading.Event()
    out, err = io.StringIO(), io.StringIO()
    original = listen.listen
    thread = run_cli(["listen", "--port", str(port)], stop, out, err)
    try:
        deadline = time.monotonic() + 10
        while "listening on" not in err.getvalue():
            assert time.monotonic() < deadline, err.getvalue()
            time.sleep(0.02)
        yield Listening(port, out, err)
    finally:
        stop.set()
        thread.join(timeout=10)
        listen.listen = original  # type: ignore[assignment]


EVENT = {"event_id": "01JX-3", "email_id": "01JX", "sequence": 3, "status": "delivered"}


def test_a_signed_event_is_printed_with_its_status_email_and_sequence(listening: Listening) -> None:
    body = json.dumps(EVENT).encode()
    assert listening.post(body, sign(LOCAL_SECRET, body, int(time.time()))) == 204
    [line] = listening.out.getvalue().splitlines()
    assert line.split()[:4] == ["delivered", "01JX", "sequence", "3"]
    assert "signature ok" in line


@pytest.mark.parametrize(
    ("secret", "age", "signature"),
    [("another secret", 0, None), (LOCAL_SECRET, 600, None), (LOCAL_SECRET, 0, "t=1,v1=zz"), (LOCAL_SECRET, 0, "")],
)
def test_a_bad_signature_is_answered_401_and_shown_rejected(
    listening: Listening, secret: str, age: int, signature: str | None
) -> None:
    body = json.dumps(EVENT).encode()
    header = signature if signature is not None else sign(secret, body, int(time.time()) - age)
    assert listening.post(body, header) == 401
    [line] = listening.out.getvalue().splitlines()
    assert line.startswith("REJECTED 401")


def test_the_secret_comes_from_the_flag_then_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    received: list[str] = []
    monkeypatch.setattr(listen, "listen", lambda port, secret, *args, **kwargs: received.append(secret) or 0)
    monkeypatch.setenv("MAILQUEUE_WEBHOOK_SECRET", "from-the-environment")
    assert cli.main(["listen", "--port", "9"], out=io.StringIO(), err=io.StringIO()) == 0
    assert cli.main(["listen", "--port", "9", "--secret", "from-the-flag"], out=io.StringIO(), err=io.StringIO()) == 0
    monkeypatch.delenv("MAILQUEUE_WEBHOOK_SECRET")
    assert cli.main(["listen", "--port", "9"], out=io.StringIO(), err=io.StringIO()) == 0
    assert received == ["from-the-environment", "from-the-flag", LOCAL_SECRET]
