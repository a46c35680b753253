"""What the API's init leaves to the requests that need it (docs/performance.md, *Cold start*).

Each check imports the handler module in a fresh interpreter, as Lambda's init does, and looks at what
the import loaded and built.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]

REPORT = """
import json, sys
import api
from pydantic import BaseModel
from mailqueue import models, template_models

built = sorted(
    f"{module.__name__}.{name}"
    for module in (models, template_models)
    for name, value in vars(module).items()
    if isinstance(value, type) and issubclass(value, BaseModel) and value.__module__ == module.__name__
    and value.__pydantic_complete__
)
modelled = sorted(
    f"{module.__name__}.{name}"
    for module in (models, template_models)
    for name, value in vars(module).items()
    if isinstance(value, type) and issubclass(value, BaseModel) and value.__module__ == module.__name__
)
loaded = [name for name in ("aws_lambda_powertools.utilities.idempotency", "email_validator") if name in sys.modules]
print(json.dumps({"built": built, "models": modelled, "loaded": loaded}))
"""


def _init(function: str, report: str) -> dict[str, Any]:
    folder = ROOT / "functions" / function
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(folder), str(ROOT / "layers" / "shared")]),
        "LAMBDA_TASK_ROOT": str(folder),
        "POWERTOOLS_TRACE_DISABLED": "false",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    env.pop("AWS_SAM_LOCAL", None)
    answer = subprocess.run([sys.executable, "-c", report], env=env, capture_output=True, text=True, check=False)
    assert answer.returncode == 0, answer.stderr[-2000:]
    result: dict[str, Any] = json.loads(answer.stdout.strip().splitlines()[-1])
    return result


def test_the_api_init_builds_no_request_or_response_model_and_leaves_their_imports_to_the_requests() -> None:
    result = _init("api", REPORT)

    # The first request builds the models it validates and answers with; the others are never built.
    assert len(result["models"]) > 20
    assert result["built"] == []
    # The idempotency utility waits for a request with an Idempotency-Key, email_validator for an address.
    assert result["loaded"] == []


@pytest.mark.parametrize(
    ("function", "module"),
    [("sender", "sender"), ("requeue", "requeue"), ("events", "ses_events"), ("notify", "notify")],
)
def test_the_functions_that_validate_no_request_do_not_import_pydantic(function: str, module: str) -> None:
    # Importing pydantic and its core took about 150 ms of the sender's init (docs/performance.md).
    report = f"import json, sys\nimport {module}\nprint(json.dumps({{'loaded': 'pydantic' in sys.modules}}))"

    assert _init(function, report) == {"loaded": False}
