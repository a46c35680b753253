"""Invoke one function with one event against the running local stack, as ``sam local invoke -e`` would.

    .venv/bin/python -m mailqueue_dev.invoke api events/api/post-email.json
    .venv/bin/python -m mailqueue_dev.invoke sender events/sender/sqs-batch.json
    .venv/bin/python -m mailqueue_dev.invoke requeue events/requeue/scheduled.json
    .venv/bin/python -m mailqueue_dev.invoke events events/events/delivery.json
    .venv/bin/python -m mailqueue_dev.invoke notify events/notify/stream-delivered.json

No Docker: the handler runs in this process, with the environment the running stack (``make dev``) gave
its functions (its tables, queues and bucket in the emulator, its settings), found through
``.mailqueue/stack.json`` from this directory or a parent. The function's answer is printed on stdout
as JSON; its logs go to stderr. Exit code 0 when the handler returned, 1 when it raised, 2 on a usage
error (no running stack, no such function, an unreadable event).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from mailqueue_dev import lambda_events, running
from mailqueue_dev.running import RunningStack


class UsageError(Exception):
    pass


def find_function(stack: RunningStack, name: str) -> tuple[str, dict[str, Any]]:
    """A function by logical id (ApiFunction) or short name (api), in any case."""
    wanted = name.lower()
    for logical_id, function in stack.functions.items():
        if wanted in {logical_id.lower(), logical_id.lower().removesuffix("function")}:
            return logical_id, function
    names = ", ".join(sorted(logical_id.removesuffix("Function").lower() for logical_id in stack.functions))
    raise UsageError(f"no function {name!r} in the running stack (it has: {names})")


def load_stack(state_dir: Path | None) -> RunningStack:
    found = state_dir or running.find_state_dir()
    stack = RunningStack.load(found) if found is not None else None
    if stack is None or not stack.alive:
        raise UsageError("no local stack is running from here: start it with `make dev` first")
    return stack


def invoke(stack: RunningStack, name: str, event: dict[str, Any], logs: IO[str]) -> Any:
    logical_id, function = find_function(stack, name)
    os.environ.update(stack.environment)
    folder = str(function["folder"])
    if folder not in sys.path:
        sys.path.insert(0, folder)
    context = lambda_events.LambdaContext(
        function_name=f"mailqueue-{logical_id}", timeout_seconds=float(function["timeout"])
    )
    # Handlers log (and print their metrics) on stdout, as on Lambda: here stdout is for the answer alone.
    with contextlib.redirect_stdout(logs):
        module = importlib.import_module(str(function["module"]))
        handler = getattr(module, str(function["attribute"]))
        return handler(event, context)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mailqueue_dev.invoke",
        description="Invoke a function of the running local stack with an event file, as sam local invoke -e does.",
    )
    parser.add_argument("function", help="api, sender, requeue, events, notify or webhook (or a logical id)")
    parser.add_argument("event", help="a JSON event file, e.g. events/api/post-email.json; - for stdin")
    parser.add_argument("--state", type=Path, metavar="DIR", help="the stack's state directory (default: .mailqueue)")
    args = parser.parse_args(argv)
    try:
        text = sys.stdin.read() if args.event == "-" else Path(args.event).read_text(encoding="utf-8")
        event = json.loads(text)
        stack = load_stack(args.state)
        find_function(stack, args.function)
    except (OSError, ValueError, UsageError) as error:
        print(f"invoke: {error}", file=sys.stderr)
        return 2
    try:
        answer = invoke(stack, args.function, event, sys.stderr)
    except Exception:
        traceback.print_exc()
        return 1
    print(json.dumps(answer, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
