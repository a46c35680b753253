"""``mailqueue console``: the queue in a browser, served from this machine.

A small web server on 127.0.0.1 (never another interface) renders the console's pages from the mailqueue
API: the local stack by default, or a deployed stack, signing each call with the user's AWS credentials
(SigV4) or sending their JWT, as the CLI does. The browser talks only to this server and never holds
credentials; nothing is deployed for it.
"""

from __future__ import annotations

import argparse
import os
import threading
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from mailqueue_dev.cli import DEFAULT_OUTBOX, EXIT_OK, EXIT_USAGE, Api, Failure, Output, is_local
from mailqueue_dev.console.app import Console
from mailqueue_dev.console.client import ConsoleClient

__all__ = ["Console", "ConsoleServer", "register"]

HOST = "127.0.0.1"
DEFAULT_PORT = 3700


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class ConsoleServer:
    """The console on http://127.0.0.1:<port>/ in a thread of its own; port 0 takes a free one."""

    def __init__(self, console_for: Any, port: int = DEFAULT_PORT) -> None:
        try:
            self._server = _ThreadingServer((HOST, port), _QuietHandler)
        except OSError as error:
            raise Failure(EXIT_USAGE, f"cannot listen on {HOST}:{port}: {error.strerror} (try --port)") from None
        self.port = int(self._server.server_address[1])
        self.console: Console = console_for(self.port)
        self._server.set_app(self.console)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/"

    def start(self) -> ConsoleServer:
        self._thread = threading.Thread(target=self._server.serve_forever, name="mailqueue-console", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def close(self) -> None:
        self._server.server_close()

    def stop(self) -> None:
        self._server.shutdown()
        self.close()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> ConsoleServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


def serve(api: Api, args: argparse.Namespace, output: Output) -> int:
    outbox: Path | None = None
    if is_local(api.url):
        outbox = Path(args.outbox or os.environ.get("MAILQUEUE_OUTBOX") or DEFAULT_OUTBOX).resolve()
    client = ConsoleClient(api)
    server = ConsoleServer(lambda port: Console(client, port, outbox), args.port)
    output.note(f"mailqueue console for {api.url}: {server.url} (Ctrl-C stops it)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    return EXIT_OK


def _port(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{value!r} is not a port (0 to 65535; 0 picks a free one)")
    return port


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    """Add ``mailqueue console`` to the CLI's commands."""
    console = commands.add_parser(
        "console", parents=[common], help=f"the queue in your browser, at http://{HOST}:{DEFAULT_PORT}/"
    )
    console.add_argument("--port", type=_port, default=DEFAULT_PORT, help=f"default: {DEFAULT_PORT}; on {HOST} only")
    console.add_argument("--jwt", dest="token", default=argparse.SUPPRESS, metavar="JWT", help="the same as --token")
    console.add_argument(
        "--outbox",
        metavar="DIR",
        help=f"local only: show each email's .eml (default: $MAILQUEUE_OUTBOX or {DEFAULT_OUTBOX})",
    )
    console.set_defaults(run=serve)
