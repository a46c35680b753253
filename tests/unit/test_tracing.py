"""The functions' tracer: Powertools' Tracer where traced, a stand-in that never loads the X-Ray SDK elsewhere."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mailqueue.tracing import Untraced, tracing_disabled

ROOT = Path(__file__).resolve().parents[2]


def _in_a_fresh_interpreter(function_folder: str, module: str, environment: dict[str, str]) -> dict[str, object]:
    """Import a handler module as Lambda's init does; report the tracer's type and whether the SDK loaded."""
    folder = ROOT / "functions" / function_folder
    code = (
        f"import sys, json, {module}; "
        f"print(json.dumps({{'tracer': type({module}.tracer).__name__, "
        "'xray': any(name.startswith('aws_xray_sdk') for name in sys.modules)}))"
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(folder), str(ROOT / "layers" / "shared")]),
        "LAMBDA_TASK_ROOT": str(folder),
        **environment,
    }
    env.pop("AWS_SAM_LOCAL", None)
    answer = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False)
    assert answer.returncode == 0, answer.stderr[-2000:]
    result: dict[str, object] = json.loads(answer.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize(("folder", "module"), [("sender", "sender"), ("requeue", "requeue"), ("events", "ses_events")])
def test_a_function_whose_tracing_is_disabled_never_imports_the_x_ray_sdk(folder: str, module: str) -> None:
    result = _in_a_fresh_interpreter(folder, module, {"POWERTOOLS_TRACE_DISABLED": "true"})

    assert result == {"tracer": "Untraced", "xray": False}


def test_the_traced_api_gets_powertools_tracer() -> None:
    result = _in_a_fresh_interpreter("api", "api", {"POWERTOOLS_TRACE_DISABLED": "false"})

    assert result == {"tracer": "Tracer", "xray": True}


def test_the_stand_in_returns_the_function_itself() -> None:
    def handler(event: object, context: object) -> str:
        return "answer"

    untraced = Untraced()

    assert untraced.capture_lambda_handler(handler) is handler
    assert untraced.capture_method(handler) is handler


@pytest.mark.parametrize(
    ("environment", "disabled"),
    [
        ({"LAMBDA_TASK_ROOT": "/var/task"}, False),
        ({"LAMBDA_TASK_ROOT": "/var/task", "POWERTOOLS_TRACE_DISABLED": "false"}, False),
        ({"LAMBDA_TASK_ROOT": "/var/task", "POWERTOOLS_TRACE_DISABLED": "true"}, True),
        ({"LAMBDA_TASK_ROOT": "/var/task", "POWERTOOLS_TRACE_DISABLED": "1"}, True),
        ({}, True),  # outside Lambda: no X-Ray daemon to send to
        ({"LAMBDA_TASK_ROOT": "/var/task", "AWS_SAM_LOCAL": "true"}, True),
    ],
)
def test_tracing_is_disabled_as_powertools_decides(environment: dict[str, str], disabled: bool) -> None:
    assert tracing_disabled(environment) is disabled
