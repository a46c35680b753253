"""A webhook receiver on 127.0.0.1: ``mailqueue listen --port N`` (and the tests' receiver).

Each POST's ``Mailqueue-Signature`` is verified with the secret (:func:`mailqueue.webhooks.verify`, a
five-minute replay window): a request that fails it is answered 401 and shown as rejected; a verified
event is answered with ``answer(event)`` (204 unless told otherwise) and shown as one line: its status,
email id and sequence.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import IO, Any

from mailqueue.webhooks import EVENT_ID_HEADER, LOCAL_SECRET, SIGNATURE_HEADER, InvalidSignature, verify

DEFAULT_HOST = "127.0.0.1"
# A request body larger than this is refused (413) before it is read: status events are a few KB.
MAX_BODY_BYTES = 1_000_000


@dataclass(frozen=True)
class Received:
    """One request the receiver took: the event when its signature held, else why it did not."""

    path: str
    body: bytes
    headers: dict[str, str]
    event: dict[str, Any] | None
    error: str | None
    answered: int

    @property
    def verified(self) -> bool:
        return self.error is None


@dataclass
class WebhookReceiver:
    """An HTTP server that verifies each webhook and keeps what it received (``received``), in order.

    ``answer`` picks the status of each verified event (a test's receiver failing on purpose); ``on_receive``
    sees each request as it is answered (the CLI prints it). Port 0 picks a free one.
    """

    secret: str | bytes
    host: str = DEFAULT_HOST
    port: int = 0
    answer: Callable[[dict[str, Any]], int] = lambda _event: 204
    on_receive: Callable[[Received], None] | None = None
    clock: Callable[[], float] = time.time
    received: list[Received] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def url(self, path: str = "/webhooks") -> str:
        return f"http://{self.host}:{self.port}{path}"

    def start(self) -> WebhookReceiver:
        receiver = self

        class Handler(_Handler):
            owner = receiver

        server = ThreadingHTTPServer((self.host, self.port), Handler)
        server.daemon_threads = True
        self.port = int(server.server_address[1])
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name=f"webhooks-{self.port}", daemon=True)
        self._thread.start()
        return self

    @property
    def running(self) -> bool:
        return self._server is not None

    def stop(self) -> None:
        """Stop answering (connections are refused from now on); ``start()`` again listens on the same port."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def __enter__(self) -> WebhookReceiver:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def events(self) -> list[dict[str, Any]]:
        """The verified events received so far, in order of arrival."""
        with self._lock:
            return [r.event for r in self.received if r.event is not None]

    def take(self, body: bytes, headers: dict[str, str], path: str) -> Received:
        """Verify one request and decide its answer."""
        try:
            verify(self.secret, headers.get(SIGNATURE_HEADER.lower()), body, now=self.clock())
            event = json.loads(body)
            if not isinstance(event, dict):
                raise ValueError("the body is not a JSON object")
        except InvalidSignature as error:
            received = Received(path, body, headers, None, f"bad signature: {error}", 401)
        except ValueError as error:
            received = Received(path, body, headers, None, f"not an event: {error}", 400)
        else:
            received = Received(path, body, headers, event, None, self.answer(event))
        with self._lock:
            self.received.append(received)
        return received


class _Handler(BaseHTTPRequestHandler):
    owner: WebhookReceiver
    protocol_version = "HTTP/1.1"
    server_version = "mailqueue-listen"

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        if length > MAX_BODY_BYTES:
            self._reply(413, close=True)
            return
        body = self.rfile.read(length)
        headers = {name.lower(): value for name, value in self.headers.items()}
        received = self.owner.take(body, headers, self.path)
        if self.owner.on_receive is not None:  # shown before the answer: what the sender saw answered is shown
            self.owner.on_receive(received)
        self._reply(received.answered)

    def _reply(self, status: int, close: bool = False) -> None:
        self.send_response(status)
        self.send_header("content-length", "0")
        if close:
            self.send_header("connection", "close")
            self.close_connection = True
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # each request is shown by on_receive


def describe(received: Received) -> str:
    """One line per request, as `mailqueue listen` prints it."""
    event = received.event
    if event is None:
        event_id = received.headers.get(EVENT_ID_HEADER.lower(), "?")
        return f"REJECTED {received.answered}  {event_id}  {received.error}"
    return (
        f"{event.get('status')!s:<11} {event.get('email_id')}  sequence {event.get('sequence')}  "
        f"event {event.get('event_id')}  (signature ok, answered {received.answered})"
    )


# --- `mailqueue listen` -------------------------------------------------------------------------------------


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    listen = commands.add_parser(
        "listen",
        parents=[common],
        help="receive webhooks on 127.0.0.1: verify each signature and print each event",
        description="A webhook receiver for the local stack: MAILQUEUE_WEBHOOK_URL=http://127.0.0.1:PORT/ make dev",
    )
    listen.add_argument("--port", type=int, required=True, help="the port to listen on (127.0.0.1)")
    listen.add_argument(
        "--secret",
        default=None,
        help="the signing secret (default: $MAILQUEUE_WEBHOOK_SECRET, else the local stack's default)",
    )
    listen.set_defaults(run=cmd_listen, local_only=True)


def cmd_listen(_api: Any, args: argparse.Namespace, output: Any) -> int:
    secret = args.secret or os.environ.get("MAILQUEUE_WEBHOOK_SECRET") or LOCAL_SECRET
    return listen(args.port, secret, output.out, output.err, as_json=bool(getattr(output, "as_json", False)))


def listen(port: int, secret: str, out: IO[str], err: IO[str], as_json: bool = False, stop: Any = None) -> int:
    """Serve until interrupted (or ``stop``, a threading.Event, is set)."""
    lock = threading.Lock()

    def show(received: Received) -> None:
        with lock:
            if as_json:
                out.write(json.dumps({"verified": received.verified, "error": received.error, "event": received.event}))
                out.write("\n")
            else:
                out.write(describe(received) + "\n")
            out.flush()

    receiver = WebhookReceiver(secret=secret, port=port, on_receive=show)
    try:
        receiver.start()
    except OSError as error:
        err.write(f"mailqueue: cannot listen on {DEFAULT_HOST}:{port}: {error}\n")
        return 3
    err.write(
        f"listening on {receiver.url('/')} (any path); start the stack with\n"
        f"  MAILQUEUE_WEBHOOK_URL={receiver.url('/')} make dev\n"
    )
    err.flush()
    waiter = stop or threading.Event()
    try:
        while not waiter.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        receiver.stop()
    return 0
