"""Where a running local stack says where it is: ``.mailqueue/stack.json``, for the CLI and ``invoke``.

``make dev`` writes the file when its API is up and removes it when it stops. It holds the API's URL,
the emulator's endpoint, the outbox, a token that the stack's API answers with (so a client can tell
it is talking to this stack and not another one on the same port), and each function's handler and
environment (for :mod:`mailqueue_dev.invoke`).

A client looks for the state directory in the current directory, then in each parent, as git looks
for ``.git``: any subdirectory of the project finds the stack started at its root.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

STATE_DIR_NAME = ".mailqueue"
STACK_FILE = "stack.json"
# A route of the local runner only (never of the API function): answers with the stack's token.
IDENTITY_PATH = "/_local/stack"


@dataclass
class RunningStack:
    url: str
    endpoint_url: str
    outbox: str
    token: str
    pid: int
    root: str
    # Each function's handler: folder, module, attribute, timeout (seconds).
    functions: dict[str, dict[str, Any]] = field(default_factory=dict)
    # The functions' environment as the stack set it (resource names, settings, AWS_ENDPOINT_URL).
    environment: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, state_dir: Path) -> RunningStack | None:
        try:
            data = json.loads((state_dir / STACK_FILE).read_text(encoding="utf-8"))
            return cls(**data)
        except (OSError, ValueError, TypeError):
            return None

    def write(self, state_dir: Path) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        partial = state_dir / f"{STACK_FILE}.partial"
        partial.write_text(json.dumps(asdict(self), indent=2), encoding="utf-8")
        partial.replace(state_dir / STACK_FILE)

    @property
    def alive(self) -> bool:
        """The process that wrote the file still runs (a stack killed hard leaves its file behind)."""
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def remove(state_dir: Path, token: str) -> None:
    """Remove the file if it is still this stack's (another stack may have started since)."""
    current = RunningStack.load(state_dir)
    if current is not None and current.token == token:
        with contextlib.suppress(FileNotFoundError):
            (state_dir / STACK_FILE).unlink()


def find_state_dir(start: Path | None = None) -> Path | None:
    """The nearest ``.mailqueue`` directory from ``start`` (the current directory) upward."""
    here = (start or Path.cwd()).resolve()
    for directory in (here, *here.parents):
        candidate = directory / STATE_DIR_NAME
        if candidate.is_dir():
            return candidate
    return None
