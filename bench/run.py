"""`make bench`: measure what an email costs and how fast the functions start; write bench/results.json.

    .venv/bin/python -m bench.run [--runs N] [--out PATH]

Every figure comes from this run: calls and capacity from emails sent through the local stack
(:mod:`bench.lifecycle`), cold starts and warm CPU from fresh interpreters (:mod:`bench.probe`), the
layer's size from ``.aws-sam/build`` when ``make build`` made one. Prices come from bench/prices.json.
Wall-clock figures vary with the machine: compare the ratios, not the milliseconds.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from mailqueue.requeue import RESERVE_MILLIS
from mailqueue.settings import Settings
from mailqueue_dev.template import Stack, load_template

from bench import lifecycle, send_rate, units
from bench import webhooks as webhook_bench
from bench.lifecycle import ESM, EVENTS, NOTIFY, Call, Invocation, LifecycleResult

ROOT = Path(__file__).resolve().parents[1]
PRICES = ROOT / "bench" / "prices.json"
LIMITS = ROOT / "bench" / "limits.json"
RESULTS = ROOT / "bench" / "results.json"
LAYER = ROOT / ".aws-sam" / "build" / "SharedLayer"

# (logical id, handler module, code folder)
FUNCTIONS = (
    ("ApiFunction", "api", "functions/api"),
    ("SenderFunction", "sender", "functions/sender"),
    ("RequeueFunction", "requeue", "functions/requeue"),
    (EVENTS, "ses_events", "functions/events"),
    (NOTIFY, "notify", "functions/notify"),
    ("WebhookFunction", "webhook", "functions/webhook"),
)

GOALS = {
    "batch_path_usd_per_million": 5.0,
    "single_path_usd_per_million": 7.0,
    "dynamodb_wru_per_email_life": 6.0,
    "init_to_floor_ratio": 1.3,
    "sender_cpu_ms_per_email": 1.0,
}

# What Lambda writes to a function's log group per invocation besides the function's own lines, in the
# text format (with active tracing the REPORT line carries the X-Ray trace id) ...
PLATFORM_LINES = (
    "START RequestId: 8f5e0c8e-2f0e-4c1e-9c57-0a9b1f0d3e11 Version: $LATEST\n"
    "END RequestId: 8f5e0c8e-2f0e-4c1e-9c57-0a9b1f0d3e11\n"
    "REPORT RequestId: 8f5e0c8e-2f0e-4c1e-9c57-0a9b1f0d3e11\tDuration: 48.21 ms\tBilled Duration: 49 ms\t"
    "Memory Size: 512 MB\tMax Memory Used: 112 MB\t\n"
    "XRAY TraceId: 1-6745a2b1-3f2c1d0e9b8a7f6e5d4c3b2a\tSegmentId: 5e4d3c2b1a0f9e8d\tSampled: true\t\n"
)
PLATFORM_BYTES = len(PLATFORM_LINES.encode())
# ... and in the JSON format, where they are records of level INFO (platform.start, platform.runtimeDone,
# platform.report) that a system log level of WARN or above drops.
PLATFORM_RECORDS = (
    '{"time":"2026-11-26T10:00:00.000Z","type":"platform.start","record":{"requestId":'
    '"8f5e0c8e-2f0e-4c1e-9c57-0a9b1f0d3e11","version":"$LATEST"}}\n'
    '{"time":"2026-11-26T10:00:00.048Z","type":"platform.runtimeDone","record":{"requestId":'
    '"8f5e0c8e-2f0e-4c1e-9c57-0a9b1f0d3e11","status":"success","metrics":{"durationMs":48.21,"producedBytes":0}}}\n'
    '{"time":"2026-11-26T10:00:00.049Z","type":"platform.report","record":{"requestId":'
    '"8f5e0c8e-2f0e-4c1e-9c57-0a9b1f0d3e11","metrics":{"durationMs":48.21,"billedDurationMs":49,'
    '"memorySizeMB":512,"maxMemoryUsedMB":112},"tracing":{"type":"X-Amzn-Trace-Id","value":'
    '"Root=1-6745a2b1-3f2c1d0e9b8a7f6e5d4c3b2a;Parent=5e4d3c2b1a0f9e8d;Sampled=1"},"status":"success"}}\n'
)
_LOG_LEVELS = ("TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL")


def _function_property(template: dict[str, Any], logical_id: str, name: str, default: Any = None) -> Any:
    """A function's property, or the Globals' when the function leaves it out."""
    properties = template["Resources"].get(logical_id, {}).get("Properties", {})
    return properties.get(name, template.get("Globals", {}).get("Function", {}).get(name, default))


def platform_log_bytes(template: dict[str, Any], logical_id: str) -> int:
    """Bytes of Lambda's own START/END/REPORT lines per invocation under the function's LoggingConfig."""
    config = _function_property(template, logical_id, "LoggingConfig", {}) or {}
    if config.get("LogFormat", "Text") != "JSON":
        return PLATFORM_BYTES
    level = config.get("SystemLogLevel", "INFO")
    return len(PLATFORM_RECORDS.encode()) if _LOG_LEVELS.index(level) <= _LOG_LEVELS.index("INFO") else 0


def trace_rate(template: dict[str, Any], logical_id: str, rate: float) -> float:
    """Traces a function records per invocation: the sampling rate where it is Active; where it is
    PassThrough, the rate of what reaches it sampled, which only an SQS event source brings (the traced
    API's header rides on its messages); an EventBridge rule or a schedule brings none."""
    mode = _function_property(template, logical_id, "Tracing", "PassThrough")
    if mode == "Active":
        return rate
    if mode == "PassThrough":
        events = template["Resources"].get(logical_id, {}).get("Properties", {}).get("Events", {}) or {}
        return rate if any(event.get("Type") == "SQS" for event in events.values()) else 0.0
    return 0.0


# Representative values for the API's access log format (template.yaml, HttpApi AccessLogSettings).
ACCESS_LOG_VALUES = {
    "requestId": "Bx3kQhN0IAMEVxw=",
    "requestTime": "26/Nov/2026:10:00:00 +0000",
    "identity.sourceIp": "203.0.113.10",
    "identity.userArn": "arn:aws:iam::123456789012:role/shop-backend",
    "httpMethod": "POST",
    "path": "/emails",
    "routeKey": "ANY /{proxy+}",
    "status": "202",
    "protocol": "HTTP/1.1",
    "responseLength": "112",
    "responseLatency": "61",
    "integrationLatency": "58",
    "integrationErrorMessage": "-",
    "authorizer.error": "-",
    "error.message": "-",
}


# --- helpers ------------------------------------------------------------------------------------------------


def access_log_bytes(template: dict[str, Any]) -> int:
    """Bytes of one access log line of the API, from the template's format with representative values."""
    line = template["Resources"]["HttpApi"]["Properties"]["AccessLogSettings"]["Format"]
    for name, value in sorted(ACCESS_LOG_VALUES.items(), key=lambda item: -len(item[0])):
        line = line.replace(f"$context.{name}", value)
    return len(line.encode()) + 1


def _median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


# --- usage from what the lifecycle recorded -----------------------------------------------------------------


@dataclass
class Selection:
    """Calls and invocations of some phase and functions, to be read per email."""

    calls: list[Call]
    invocations: list[Invocation]
    emails: int


def select(
    life: LifecycleResult, phase: str, functions: set[str], keep: Callable[[Invocation], bool] | None = None
) -> Selection:
    recorder = life.recorder
    invocations = [
        i for i in recorder.invocations if i.phase == phase and i.function in functions and (keep is None or keep(i))
    ]
    numbers = {i.number for i in invocations}
    calls = [
        c
        for c in recorder.calls
        if c.phase == phase and not c.empty and ((c.scope == ESM and ESM in functions) or (c.invocation in numbers))
    ]
    return Selection(calls, invocations, 0)


def usage_of(
    selection: Selection,
    emails: int,
    memory: dict[str, int],
    traces: dict[str, float],
    platform_bytes: dict[str, int],
    access_log: int,
) -> units.Usage:
    """What the selected calls and invocations use, per email."""
    usage = units.Usage()
    for call in selection.calls:
        usage.dynamodb_wru += call.wru
        usage.dynamodb_rru += call.rru
        usage.sqs_requests += call.sqs_requests
        usage.s3_puts += call.s3_puts
        usage.s3_gets += call.s3_gets
    for invocation in selection.invocations:
        usage.lambda_requests += 1
        usage.lambda_gb_seconds += units.gb_seconds(memory[invocation.function], invocation.duration_ms)
        usage.log_bytes += invocation.log_bytes + invocation.emf_bytes + platform_bytes.get(invocation.function, 0)
        usage.xray_traces += traces.get(invocation.function, 0.0)
        if invocation.function == EVENTS:
            usage.eventbridge_events += 1  # each invocation is one SES event on the default bus
        if invocation.function == NOTIFY:
            # Lambda's filter passes only records that become events (a published status, changed)
            usage.status_events += invocation.records
        if invocation.function == "ApiFunction":
            usage.api_requests += 1
            usage.log_bytes += access_log
    return usage.scaled(1 / emails)


def calls_per_email(selection: Selection, emails: int) -> dict[str, float]:
    counted = Counter(f"{c.service}:{c.operation}" + (f" ({c.error})" if c.error else "") for c in selection.calls)
    return {name: count / emails for name, count in sorted(counted.items())}


def wru_breakdown(selection: Selection, emails: int) -> dict[str, float]:
    parts: dict[str, float] = defaultdict(float)
    for call in selection.calls:
        for name, value in call.wru_by.items():
            parts[_short_table(name)] += value / emails
    return dict(sorted(parts.items()))


def partition_spread(selections: list[tuple[Selection, int]]) -> dict[str, dict[str, float]]:
    """Index write units per email, by index and partition key group: a status (``sent#2`` -> ``sent``),
    or ``shard`` for the numbered shards of the deadline index. Each group is spread evenly over its
    shards, so the busiest partition of a group takes its units divided by the number of shards."""
    groups: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for selection, emails in selections:
        for call in selection.calls:
            for (index, partition), value in call.wru_by_partition.items():
                group = "shard" if partition.isdigit() else re.sub(r"#\d+$", "", partition)
                groups[_short_table(index)][group] += value / emails
    return {index: dict(sorted(spread.items())) for index, spread in sorted(groups.items())}


def _short_table(name: str) -> str:
    # mailqueue-EmailsTable/by-status -> EmailsTable/by-status
    return name.split("-", 1)[-1]


def duration_per_email(selection: Selection, emails: int) -> float:
    return sum(i.duration_ms for i in selection.invocations) / emails


# --- cold start, warm CPU, layer ----------------------------------------------------------------------------


_REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[([^\]]*)\])?")
_EXTRA = re.compile(r"extra\s*==\s*['\"]([^'\"]+)['\"]")


def layer_distributions(requirements: Path = ROOT / "layers" / "shared" / "requirements.txt") -> list[str]:
    """The distributions the layer ships: its requirements and what they require, as installed here."""
    pending: list[tuple[str, set[str]]] = []
    for line in requirements.read_text().splitlines():
        match = _REQUIREMENT.match(line.split("#", 1)[0])
        if match:
            pending.append((match.group(1), {e.strip() for e in (match.group(2) or "").split(",") if e.strip()}))
    seen: dict[str, str] = {}
    while pending:
        name, extras = pending.pop()
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key in seen:
            continue
        try:
            distribution = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # required only under a marker this interpreter does not meet
        seen[key] = name
        for requirement in distribution.requires or []:
            spec, _, marker = requirement.partition(";")
            extra = _EXTRA.search(marker)
            if extra and extra.group(1) not in extras:
                continue
            match = _REQUIREMENT.match(spec)
            if match:
                pending.append((match.group(1), {e.strip() for e in (match.group(2) or "").split(",") if e.strip()}))
    return sorted(seen.values())


@contextmanager
def layer_site() -> Iterator[Path]:
    """A directory with only what the layer ships, linked from this virtualenv.

    The probes run with ``python -S`` and this directory on their path, so an import finds what it
    would find on Lambda, not the dev tools installed here (requests, moto, …) that a library would
    pick up and load when present.
    """
    directory = Path(tempfile.mkdtemp(prefix="mailqueue-layer-"))
    try:
        for name in layer_distributions():
            distribution = metadata.distribution(name)
            site = Path(str(distribution.locate_file("")))
            for top in {file.parts[0] for file in distribution.files or [] if file.parts}:
                if top in {"..", "__pycache__"} or top.endswith(".pth"):
                    continue
                target = directory / top
                if not target.exists() and (site / top).exists():
                    target.symlink_to(site / top)
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def function_environment(
    template: dict[str, Any], logical_id: str, folder: Path, module: str, site: Path
) -> dict[str, str]:
    """The environment Lambda gives the function (template.yaml), with fake credentials and no endpoint.

    Its path holds the function's folder, the layer's package and ``site`` (the layer's dependencies),
    then this repository for ``bench.probe`` itself and the dev package (the warm probe's events).
    """
    parameters = {name: str(spec.get("Default", "")) for name, spec in template.get("Parameters", {}).items()}
    stack = Stack(template=template, prefix="mailqueue", parameters=parameters)
    if logical_id in template["Resources"]:
        variables = stack.function_environment(logical_id)
    else:
        globals_ = template.get("Globals", {}).get("Function", {}).get("Environment", {}).get("Variables", {})
        variables = {name: str(stack.resolve(value)) for name, value in globals_.items()}
    memory = int(template.get("Globals", {}).get("Function", {}).get("MemorySize", 128))
    environment = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_SESSION_TOKEN": "bench",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_LAMBDA_FUNCTION_NAME": f"mailqueue-{logical_id}",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(memory),
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_EXECUTION_ENV": "AWS_Lambda_python3.13",
        # Powertools enables its tracer (and imports the X-Ray SDK) where this is set, as on Lambda.
        "LAMBDA_TASK_ROOT": str(folder),
        "_HANDLER": f"{module}.handler",
        "PYTHONPATH": os.pathsep.join(str(p) for p in (folder, ROOT / "layers" / "shared", site, ROOT, ROOT / "dev")),
    }
    environment.update(variables)
    return environment


def _probe(environment: dict[str, str], *args: str) -> dict[str, Any]:
    answer = subprocess.run(
        # -S: no site-packages of this virtualenv; the environment's PYTHONPATH says what exists.
        [sys.executable, "-S", "-m", "bench.probe", *args],
        env=environment,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    lines = [line for line in answer.stdout.splitlines() if line.startswith("BENCH ")]
    if answer.returncode != 0 or not lines:
        raise RuntimeError(f"probe {' '.join(args)} failed:\n{answer.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(lines[-1].removeprefix("BENCH "))
    return result


def cold_starts(template: dict[str, Any], runs: int, site: Path) -> dict[str, Any]:
    """Init of each handler and its boto3 floor, interleaved so that drift hits both alike; medians.

    The ratio is of CPU time: an import is CPU-bound once its files are in the page cache, and CPU time
    holds still when other processes share the machine, where wall-clock time does not.
    """
    environments = {
        logical_id: function_environment(template, logical_id, ROOT / folder, module, site)
        for logical_id, module, folder in FUNCTIONS
    }
    services: dict[str, list[str]] = {}
    for logical_id, module, _ in FUNCTIONS:
        # The first run warms the page cache and tells which clients the module creates.
        services[logical_id] = _probe(environments[logical_id], "init", module)["services"]
    samples: dict[str, dict[str, list[dict[str, Any]]]] = {f[0]: {"init": [], "floor": []} for f in FUNCTIONS}
    for _ in range(runs):
        for logical_id, module, _ in FUNCTIONS:
            samples[logical_id]["init"].append(_probe(environments[logical_id], "init", module))
            samples[logical_id]["floor"].append(
                _probe(environments[logical_id], "floor", module, *services[logical_id])
            )
    result = {}
    for logical_id, module, _ in FUNCTIONS:
        init, floor = samples[logical_id]["init"], samples[logical_id]["floor"]
        init_cpu, floor_cpu = _median(s["cpu_ms"] for s in init), _median(s["cpu_ms"] for s in floor)
        result[logical_id] = {
            "module": module,
            "services": services[logical_id],
            "init_cpu_ms_median": round(init_cpu, 1),
            "floor_cpu_ms_median": round(floor_cpu, 1),
            "ratio": round(init_cpu / floor_cpu, 2),
            # The least of the runs: noise only ever adds time, so this ratio shows how much of the
            # median's is the machine's.
            "ratio_of_minimums": round(min(s["cpu_ms"] for s in init) / min(s["cpu_ms"] for s in floor), 2),
            "init_wall_ms_median": round(_median(s["ms"] for s in init), 1),
            "floor_wall_ms_median": round(_median(s["ms"] for s in floor), 1),
            "init_cpu_ms_runs": [round(s["cpu_ms"], 1) for s in init],
            "floor_cpu_ms_runs": [round(s["cpu_ms"], 1) for s in floor],
            "modules_loaded": init[-1]["modules"],
        }
    return result


def warm_cpu(template: dict[str, Any], samples: dict[str, Any], quick: bool, site: Path) -> dict[str, Any]:
    """CPU per email in the api and sender handlers with every AWS call stubbed."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(samples, handle, default=_json_default)
        path = handle.name
    plans = {
        "api, POST /emails": ("ApiFunction", "api", "functions/api", 1, 60 if quick else 200),
        "api, POST /emails/batch of 100": ("ApiFunction", "api", "functions/api", 100, 5 if quick else 12),
        "sender, batches of 10": ("SenderFunction", "sender", "functions/sender", 10, 20 if quick else 60),
    }
    result = {}
    try:
        for label, (logical_id, module, folder, emails, invocations) in plans.items():
            environment = function_environment(template, logical_id, ROOT / folder, module, site)
            # No X-Ray daemon here, and no waiting for send-rate slots: CPU only.
            environment.update({"POWERTOOLS_TRACE_DISABLED": "1", "SEND_RATE": "1000000"})
            result[label] = _probe(environment, "warm", module, path, str(emails), str(invocations))
    finally:
        os.unlink(path)
    return result


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode()
    raise TypeError(type(value).__name__)


def layer_size() -> dict[str, Any]:
    """The built layer (make build): bytes unzipped and zipped, and its largest packages."""
    root = LAYER / "python"
    if not root.is_dir():
        return {"built": False, "note": "no .aws-sam/build/SharedLayer: run `make build` to measure the layer"}
    sizes: dict[str, int] = defaultdict(int)
    total = files = 0
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as archive:
        for path in sorted(root.rglob("*")):
            if not path.is_file():
                continue
            size = path.stat().st_size
            total += size
            files += 1
            top = path.relative_to(root).parts[0].split("-", 1)[0].removesuffix(".py")
            sizes[top] += size
            archive.write(path, path.relative_to(LAYER).as_posix())
    largest = sorted(sizes.items(), key=lambda item: -item[1])[:8]
    return {
        "built": True,
        "path": str(LAYER.relative_to(ROOT)),
        "files": files,
        "unzipped_bytes": total,
        "zipped_bytes": len(buffer.getvalue()),
        "largest_packages_bytes": dict(largest),
    }


# --- putting it together ------------------------------------------------------------------------------------


def analyse(life: LifecycleResult, template: dict[str, Any], prices: dict[str, Any]) -> dict[str, Any]:
    memory = life.memory_mb
    rate = float(prices["xray_default_sampling"]["rate"])
    traces = {logical_id: trace_rate(template, logical_id, rate) for logical_id, _, _ in FUNCTIONS}
    platform_bytes = {logical_id: platform_log_bytes(template, logical_id) for logical_id, _, _ in FUNCTIONS}
    access_log = access_log_bytes(template)
    n = {phase: len(ids) for phase, ids in life.emails.items()}

    def per_email(selection: Selection, emails: int) -> units.Usage:
        return usage_of(selection, emails, memory, traces, platform_bytes, access_log)

    def worked(invocation: Invocation) -> bool:
        result = invocation.result or {}
        return bool(result.get("requeued_total") or result.get("given_up"))

    selections = {
        "enqueue one (POST /emails)": (select(life, "single", {"ApiFunction"}), n["single"]),
        "enqueue one with Idempotency-Key": (select(life, "idempotent", {"ApiFunction"}), n["idempotent"]),
        "enqueue a batch of 100 (POST /emails/batch)": (select(life, "batch", {"ApiFunction"}), n["batch"]),
        "send (sender + event source)": (select(life, "batch", {"SenderFunction", ESM}), n["batch"]),
        "enqueue a batch of 100 from a template (POST /emails/batch)": (
            select(life, "templated", {"ApiFunction"}),
            n["templated"],
        ),
        "send a templated email (sender + event source)": (
            select(life, "templated", {"SenderFunction", ESM}),
            n["templated"],
        ),
        "requeue of a retried email (requeue function)": (
            select(life, "retry", {"RequeueFunction"}, worked),
            max(1, life.requeued),
        ),
        "retried email: first attempt, requeue and second attempt": (
            select(life, "retry", {"SenderFunction", ESM, "RequeueFunction"}, _not_idle),
            n["retry"],
        ),
        "SES events: Send and Delivery (events function)": (select(life, "delivery", {EVENTS}), n["delivery"]),
        "sweep: each email examined once (requeue function)": (
            select(life, "sweep", {"RequeueFunction"}),
            max(1, life.swept),
        ),
    }
    calls = {label: calls_per_email(sel, count) for label, (sel, count) in selections.items()}
    pieces = {label: per_email(sel, count) for label, (sel, count) in selections.items()}
    wru = {label: wru_breakdown(sel, count) for label, (sel, count) in selections.items()}
    durations = {label: duration_per_email(sel, count) for label, (sel, count) in selections.items()}
    batch_sizes = [i.records for i in select(life, "batch", {"SenderFunction"}).invocations]
    spread = partition_spread(
        [
            selections["enqueue a batch of 100 (POST /emails/batch)"],
            selections["send (sender + event source)"],
            selections["SES events: Send and Delivery (events function)"],
        ]
    )

    status_events = status_event_costs(life, prices, per_email)

    idle = [i for i in life.recorder.invocations if i.function == "RequeueFunction" and not worked(i)]
    idle_selection = Selection(
        [c for c in life.recorder.calls if c.invocation in {i.number for i in idle}], idle, len(idle)
    )
    idle_run = per_email(idle_selection, max(1, len(idle)))

    send = pieces["send (sender + event source)"]
    # Every email is swept once, whatever its path: its share of the requeue function's sweep goes with delivery.
    delivery = (
        pieces["SES events: Send and Delivery (events function)"]
        + pieces["sweep: each email examined once (requeue function)"]
    )
    retry_extra = pieces["retried email: first attempt, requeue and second attempt"] + send.scaled(-1)
    pacing = pacing_wait(template, durations["send (sender + event source)"], memory["SenderFunction"])
    paths = {
        "batch": pieces["enqueue a batch of 100 (POST /emails/batch)"] + send + delivery,
        "single": pieces["enqueue one (POST /emails)"] + send + delivery,
        "single with Idempotency-Key": pieces["enqueue one with Idempotency-Key"] + send + delivery,
        "batch from a template": pieces["enqueue a batch of 100 from a template (POST /emails/batch)"]
        + pieces["send a templated email (sender + event source)"]
        + delivery,
    }
    costs = {name: units.cost_per_million(usage, prices) for name, usage in paths.items()}
    pacing_cost = units.cost_per_million(units.Usage(lambda_gb_seconds=pacing["gb_seconds_per_email"]), prices)
    ses = units.ses_cost_per_million(prices)
    totals = {name: sum(lines.values()) for name, lines in costs.items()}
    provisioned = {
        name: round(sum(units.provisioned_cost_per_million(usage, prices).values()), 3) for name, usage in paths.items()
    }
    # An email's own writes over its normal life (enqueued in a batch, sent, delivered), without the sweep's
    # cursor, which is written once a page of up to 100 emails per shard, not per email.
    own_life = pieces["enqueue a batch of 100 (POST /emails/batch)"] + send + pieces[_EVENTS_STEP]

    return {
        "emails_per_phase": n,
        "calls_per_email": calls,
        "capacity_per_email": {label: _rounded(usage.as_dict()) for label, usage in pieces.items()},
        "dynamodb_wru_per_email_by_table_and_index": {label: _rounded(parts) for label, parts in wru.items()},
        "lambda_ms_per_email": {label: round(value, 2) for label, value in durations.items()},
        "index_wru_per_email_by_partition_group": {index: _rounded(groups, 3) for index, groups in spread.items()},
        "sender_batch_sizes": batch_sizes,
        "requeue_idle_run": _rounded(idle_run.as_dict()),
        "retried_email_extra": _rounded(retry_extra.as_dict()),
        "paths_per_email": {name: _rounded(usage.as_dict()) for name, usage in paths.items()},
        "cost_usd_per_million_emails": {name: _rounded(lines, 4) for name, lines in costs.items()},
        "cost_usd_per_million_emails_by_step": {
            label: round(sum(units.cost_per_million(usage, prices).values()), 4) for label, usage in pieces.items()
        },
        "cost_totals_usd_per_million_emails": {name: round(total, 3) for name, total in totals.items()},
        "cost_totals_usd_per_million_emails_provisioned_dynamodb": provisioned,
        "dynamodb_wru_per_email_life": round(own_life.dynamodb_wru, 3),
        "ses_usd_per_million_emails": ses,
        "infra_share_of_ses_fee": {name: round(total / ses, 4) for name, total in totals.items()},
        "retried_email_extra_usd_per_million": round(sum(units.cost_per_million(retry_extra, prices).values()), 3),
        "sender_pacing_at_template_defaults": {
            **pacing,
            "usd_per_million_emails": round(pacing_cost["Lambda duration"], 3),
        },
        "item_sizes_bytes": {
            _short_table(label): {"min": min(sizes), "max": max(sizes), "writes": len(sizes)}
            for label, sizes in sorted(life.recorder.item_sizes.items())
        },
        "log_bytes_by_line": {
            f"{function}: {kind}": count for (function, kind), count in sorted(life.recorder.logs.bytes_by_kind.items())
        },
        "log_line_samples": {
            f"{function}: {kind}": line for (function, kind), line in sorted(life.recorder.logs.samples.items())
        },
        "platform_log_bytes_per_invocation": platform_bytes,
        "xray_traces_per_invocation": traces,
        "api_access_log_bytes_per_request": access_log,
        "local_throughput": {key: round(value, 2) for key, value in life.throughput.items()},
        "status_events": status_events,
        "lifecycle_environment": life.environment,
    }


# The statuses an email passes through on the normal path (enqueued, sent, delivered): with PublishStatuses all,
# one event each.
NORMAL_PATH_STATUSES = ("queued", "sending", "sent", "delivered")


def status_event_costs(
    life: LifecycleResult, prices: dict[str, Any], per_email: Callable[[Selection, int], units.Usage]
) -> dict[str, Any]:
    """What a status event costs (the notify function, its reads, the bus), measured on the delivered events of the
    delivery phase at the batch sizes the stream gave; and per million emails for the statuses published."""
    selection = select(life, "delivery", {NOTIFY})
    events = sum(invocation.records for invocation in selection.invocations)
    if not events:
        return {"events": 0}
    usage = per_email(selection, events)
    cost = units.cost_per_million(usage, prices)
    per_event = sum(cost.values())
    each = {"one status (per email that reaches it)": 1, "the default (delivered, for a delivered email)": 1}
    each["all (normal path: " + ", ".join(NORMAL_PATH_STATUSES) + ")"] = len(NORMAL_PATH_STATUSES)
    return {
        "events": events,
        "batch_sizes": [invocation.records for invocation in selection.invocations],
        "calls_per_event": calls_per_email(selection, events),
        "usage_per_event": _rounded(usage.as_dict()),
        "usd_per_million_events": _rounded(cost, 4),
        "usd_per_million_events_total": round(per_event, 4),
        "usd_per_million_emails": {label: round(count * per_event, 3) for label, count in each.items()},
    }


def _not_idle(invocation: Invocation) -> bool:
    if invocation.function != "RequeueFunction":
        return True
    result = invocation.result or {}
    return bool(result.get("requeued_total") or result.get("given_up"))


def pacing_wait(template: dict[str, Any], active_ms_per_email: float, memory_mb: int) -> dict[str, Any]:
    """The sender's wait for its send-rate slot when the queue is backlogged, at the template's defaults.

    Each invocation sends at most send_rate / concurrency emails a second (mailqueue.sender.
    invocation_rate: the invocations of whichever queue has mail share the whole rate), so under a
    backlog every email holds an invocation that long, waiting or working.
    """
    parameters = template["Parameters"]
    send_rate = float(parameters["SendRate"]["Default"])
    concurrency = int(parameters["SenderMaxConcurrency"]["Default"])
    slot_ms = 1000 * concurrency / send_rate
    wait_ms = max(0.0, slot_ms - active_ms_per_email)
    return {
        "send_rate": send_rate,
        "sender_max_concurrency": concurrency,
        "ms_per_email_per_invocation": round(slot_ms, 1),
        "active_ms_per_email": round(active_ms_per_email, 1),
        "wait_ms_per_email": round(wait_ms, 1),
        "gb_seconds_per_email": memory_mb / 1024 * wait_ms / 1000,
        "send_rate_without_waiting": round(1000 * concurrency / max(active_ms_per_email, 1e-9), 1),
    }


def _rounded(values: dict[str, float], digits: int = 6) -> dict[str, float]:
    return {key: round(value, digits) for key, value in values.items()}


# --- capacity -----------------------------------------------------------------------------------------------

DAILY_VOLUMES = (1_000_000, 10_000_000, 100_000_000)
# The two send queues (normal and high priority): each an event source of SenderMaxConcurrency invocations.
SEND_QUEUES = 2
# Headroom over the day's average rate: traffic comes in peaks, and a backlog must drain.
HEADROOM = 2.0


def capacity(template: dict[str, Any], analysis: dict[str, Any], limits: dict[str, Any]) -> dict[str, Any]:
    """Emails an hour a deployment with the template's defaults sustains against each ceiling, from the
    measured per-email figures; and the settings each daily volume needs."""
    limit = {name: float(entry["value"]) for name, entry in limits["limits"].items()}
    parameters = template["Parameters"]
    send_rate = float(parameters["SendRate"]["Default"])
    concurrency = int(parameters["SenderMaxConcurrency"]["Default"])
    api_rate = float(parameters["ApiThrottleRate"]["Default"])
    defaults = Settings()
    queues, deadline_shards, status_shards = SEND_QUEUES, defaults.deadline_shards, defaults.status_shards
    requeue_timeout = float(template["Resources"]["RequeueFunction"]["Properties"].get("Timeout", 60))

    ms = analysis["lambda_ms_per_email"]
    active_ms = ms["send (sender + event source)"]
    per_invocation_max = 1000 / active_ms  # emails a second one sender invocation can work through
    paths = analysis["paths_per_email"]
    wru_per_email = paths["batch"]["dynamodb_wru"]
    spread = analysis["index_wru_per_email_by_partition_group"]
    # Index write units per email on the normal path, busiest partition group of each index (0: untouched).
    arrival_group = max(spread.get("EmailsTable/by-arrival", {"shard": 0.0}).values())
    deadline_group = max(spread.get("EmailsTable/by-deadline", {"shard": 0.0}).values())
    status_group = max(spread.get("EmailsTable/by-status", {"-": 0.0}).values())
    suppression_rru = analysis["capacity_per_email"]["enqueue a batch of 100 (POST /emails/batch)"]["dynamodb_rru"]
    function_seconds = {
        "batch": (ms["enqueue a batch of 100 (POST /emails/batch)"] + ms[_EVENTS_STEP]) / 1000,
        "single": (ms["enqueue one (POST /emails)"] + ms[_EVENTS_STEP]) / 1000,
    }
    requeue_ms = ms["requeue of a retried email (requeue function)"]
    sweep_ms = ms["sweep: each email examined once (requeue function)"]

    per_second = {
        "SES send rate (SendRate), both queues busy": send_rate,
        "SES send rate, one queue with mail (normal or high priority; half of it for normal before 2026-11-30)": (
            send_rate
        ),
        "sender invocations (SenderMaxConcurrency of the queue with mail x what one works through)": (
            concurrency * min(send_rate / concurrency, per_invocation_max)
        ),
        "Lambda account concurrency, batch path (API and events functions; the sender's is capped apart)": (
            (limit["lambda_concurrent_executions"] - queues * concurrency) / function_seconds["batch"]
        ),
        "Lambda account concurrency, single path": (
            (limit["lambda_concurrent_executions"] - queues * concurrency) / function_seconds["single"]
        ),
        "API throttle (ApiThrottleRate), single path": api_rate,
        "API throttle (ApiThrottleRate), batches of 100": api_rate * 100,
        "DynamoDB on-demand table, new (4,000 WRU/s before it scales)": (
            limit["dynamodb_on_demand_new_table_wru_per_second"] / wru_per_email
        ),
        "DynamoDB on-demand table quota (40,000 WRU/s)": limit["dynamodb_on_demand_table_wru_per_second"]
        / wru_per_email,
        **{
            f"DynamoDB {index} index partitions ({shards} shards)": (
                limit["dynamodb_partition_wru_per_second"] * shards / group
            )
            for index, shards, group in (
                ("by-arrival", deadline_shards, arrival_group),
                ("by-deadline", deadline_shards, deadline_group),
                ("by-status, busiest status", status_shards, status_group),
            )
            # An index the normal path does not write sets no ceiling on it.
            if group > 0
        },
        "DynamoDB suppression list partition (one recipient an email)": (
            limit["dynamodb_partition_rru_per_second"] / max(suppression_rru, 1e-9)
        ),
        "requeue function, scheduled and retried emails (one run a minute)": (
            (requeue_timeout - RESERVE_SECONDS) * 1000 / requeue_ms / 60
        ),
        # Every email is swept once: a run must examine a minute's enqueues in its time.
        "requeue function's sweep, every email examined once (one run a minute)": (
            (requeue_timeout - RESERVE_SECONDS) * 1000 / max(sweep_ms, 1e-9) / 60
        ),
    }
    ceilings = {
        name: {"emails_per_second": round(rate, 1), "emails_per_hour": round(rate * 3600)}
        for name, rate in per_second.items()
    }
    plans = {}
    for daily in DAILY_VOLUMES:
        rate = daily / 86400
        needed = rate * HEADROOM
        sender_concurrency = max(2, math.ceil(needed / per_invocation_max))
        plans[f"{daily:,} a day"] = {
            "average_emails_per_second": round(rate, 1),
            "planned_emails_per_second": round(needed, 1),
            "SendRate (the account's SES rate)": math.ceil(needed),
            "SenderMaxConcurrency (per queue)": sender_concurrency,
            "ApiThrottleRate if each email is its own request": math.ceil(needed),
            "API requests a second in batches of 100": round(needed / 100, 2),
            "Lambda concurrency, all functions": math.ceil(
                queues * sender_concurrency + needed * function_seconds["single"]
            ),
            "DynamoDB write units a second": round(needed * wru_per_email),
            "DEADLINE_SHARDS": max(deadline_shards, math.ceil(needed * max(arrival_group, deadline_group) / 1000)),
            "STATUS_SHARDS": max(status_shards, math.ceil(needed * status_group / 1000)),
            "suppression list reads a second (RRU, one recipient an email)": round(needed * suppression_rru),
            "infrastructure USD a day, batch path": round(
                daily / 1e6 * analysis["cost_totals_usd_per_million_emails"]["batch"], 2
            ),
            "SES USD a day": round(daily / 1e6 * analysis["ses_usd_per_million_emails"], 2),
        }
    return {
        "defaults": {
            "SendRate": send_rate,
            "SenderMaxConcurrency": concurrency,
            "send_queues": queues,
            "ApiThrottleRate": api_rate,
            "deadline_shards": deadline_shards,
            "status_shards": status_shards,
        },
        "measured_inputs": {
            "sender_ms_per_email": active_ms,
            "emails_per_second_one_sender_invocation": round(per_invocation_max, 1),
            "dynamodb_wru_per_email": wru_per_email,
            "by_arrival_wru_per_email_busiest_group": arrival_group,
            "by_deadline_wru_per_email_busiest_group": deadline_group,
            "by_status_wru_per_email_busiest_group": status_group,
            "suppression_rru_per_email": suppression_rru,
            "requeue_ms_per_email": requeue_ms,
            "sweep_ms_per_email": sweep_ms,
        },
        "ceilings_at_defaults": ceilings,
        "binding_ceiling_at_defaults": min(ceilings, key=lambda name: ceilings[name]["emails_per_second"]),
        "headroom_over_daily_average": HEADROOM,
        "plans": plans,
    }


_EVENTS_STEP = "SES events: Send and Delivery (events function)"
# Time the requeue function keeps back at the end of a run.
RESERVE_SECONDS = RESERVE_MILLIS / 1000


# --- output -------------------------------------------------------------------------------------------------


def _table(title: str, header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = [title, "  " + "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("  " + "  ".join("-" * w for w in widths))
    for row in rows:
        cells = [
            str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  " + "  ".join(cells))
    return "\n".join(lines)


def report(results: dict[str, Any]) -> str:
    out: list[str] = []
    a = results["analysis"]
    for label, calls in a["calls_per_email"].items():
        rows = [[name, f"{count:.3g}"] for name, count in calls.items()]
        out.append(_table(f"Calls per email: {label}", ["service:operation", "per email"], rows))
    cap_rows = []
    for label, usage in a["capacity_per_email"].items():
        cap_rows.append(
            [
                label,
                f"{usage['dynamodb_wru']:.3g}",
                f"{usage['dynamodb_rru']:.3g}",
                f"{usage['sqs_requests']:.3g}",
                f"{usage['lambda_requests']:.3g}",
                f"{usage['lambda_gb_seconds']:.4f}",
                f"{usage['log_bytes']:.0f}",
            ]
        )
    for name, usage in a["paths_per_email"].items():
        cap_rows.append(
            [
                f"WHOLE LIFE, {name} path",
                f"{usage['dynamodb_wru']:.3g}",
                f"{usage['dynamodb_rru']:.3g}",
                f"{usage['sqs_requests']:.3g}",
                f"{usage['lambda_requests']:.3g}",
                f"{usage['lambda_gb_seconds']:.4f}",
                f"{usage['log_bytes']:.0f}",
            ]
        )
    out.append(_table("Capacity per email", ["", "WRU", "RRU", "SQS req", "Lambda inv", "GB-s", "log B"], cap_rows))
    wru_rows = [
        [label, ", ".join(f"{k} {v:g}" for k, v in parts.items())]
        for label, parts in a["dynamodb_wru_per_email_by_table_and_index"].items()
        if parts
    ]
    out.append(_table("DynamoDB write units per email, by table and index", ["", "WRU"], wru_rows))
    costs = a["cost_usd_per_million_emails"]
    services = list(next(iter(costs.values())))
    rows = [[service, *(f"{costs[path][service]:.3f}" for path in costs)] for service in services]
    rows.append(["TOTAL infrastructure", *(f"{a['cost_totals_usd_per_million_emails'][p]:.3f}" for p in costs)])
    provisioned = a["cost_totals_usd_per_million_emails_provisioned_dynamodb"]
    rows.append(["  with DynamoDB provisioned (70% use)", *(f"{provisioned[p]:.3f}" for p in costs)])
    rows.append(["  share of SES's fee", *(f"{100 * a['infra_share_of_ses_fee'][p]:.1f}%" for p in costs)])
    rows.append(["SES ($0.10 per 1,000)", *(f"{a['ses_usd_per_million_emails']:.2f}" for _ in costs)])
    out.append(_table("Cost per million emails (USD, us-east-1, " + results["prices_as_of"] + ")", ["", *costs], rows))
    events = a.get("status_events") or {}
    if events.get("events"):
        lines = events["usd_per_million_events"]
        rows = [[service, f"{value:.4f}"] for service, value in lines.items() if value]
        rows.append(["TOTAL per million events", f"{events['usd_per_million_events_total']:.3f}"])
        rows += [
            [f"per million emails, {label}", f"{value:.3f}"]
            for label, value in events["usd_per_million_emails"].items()
        ]
        batches = events["batch_sizes"]
        title = (
            f"Status events (notify function, {events['events']} events in batches of {min(batches)}-{max(batches)})"
        )
        out.append(_table(title, ["", "USD"], rows))
    pacing = a["sender_pacing_at_template_defaults"]
    out.append(
        f"Sender pacing at the template's defaults (SendRate {pacing['send_rate']:g}/s, "
        f"{pacing['sender_max_concurrency']} invocations per queue): under a backlog each email "
        f"holds an invocation {pacing['ms_per_email_per_invocation']} ms, {pacing['wait_ms_per_email']} ms of it "
        f"waiting: +${pacing['usd_per_million_emails']} per million. No wait from "
        f"{pacing['send_rate_without_waiting']:g} emails/s of send rate up."
    )
    out.append(f"A retried email costs ${a['retried_email_extra_usd_per_million']} per million more.")
    cold = results["cold_start"]
    rows = [
        [
            name,
            c["module"],
            f"{c['init_cpu_ms_median']:.0f}",
            f"{c['floor_cpu_ms_median']:.0f}",
            f"{c['ratio']:.2f}x",
            f"{c['init_wall_ms_median']:.0f} / {c['floor_wall_ms_median']:.0f}",
        ]
        for name, c in cold.items()
    ]
    out.append(
        _table(
            "Cold start: init (import of the handler) vs floor (import boto3 + the same clients), medians",
            ["", "module", "init CPU ms", "floor CPU ms", "ratio", "wall ms, init / floor"],
            rows,
        )
    )
    layer = results["layer"]
    if layer.get("built"):
        out.append(
            f"Layer: {layer['unzipped_bytes'] / 1e6:.1f} MB unzipped, {layer['zipped_bytes'] / 1e6:.1f} MB zipped, "
            f"{layer['files']} files; largest: "
            + ", ".join(f"{k} {v / 1e6:.1f} MB" for k, v in layer["largest_packages_bytes"].items())
        )
    else:
        out.append(f"Layer: {layer['note']}")
    rows = [
        [
            label,
            f"{w['cpu_ms_per_email']:.3f}",
            f"{w['first_invocation_ms']:.0f}",
            ", ".join(
                f"{k} {100 * v:.0f}%" for k, v in sorted(w["cpu_share_by_package"].items(), key=lambda i: -i[1])[:4]
            ),
        ]
        for label, w in results["warm_cpu"].items()
    ]
    out.append(_table("Warm CPU per email, AWS stubbed", ["", "CPU ms", "1st inv ms", "where (profiled)"], rows))
    sender_cpu = results["warm_cpu"]["sender, batches of 10"]
    if "floor_cpu_ms_per_email" in sender_cpu:
        out.append(
            f"Sender floor, in the same process: its AWS calls replayed "
            f"{sender_cpu['floor_aws_calls_cpu_ms_per_email']:.3f} ms + the email as the standard library's "
            f"cheapest MIME {sender_cpu['floor_stdlib_mime_cpu_ms_per_email']:.3f} ms = "
            f"{sender_cpu['floor_cpu_ms_per_email']:.3f} ms an email; the sender spends "
            f"{sender_cpu['cpu_ms_per_email'] / sender_cpu['floor_cpu_ms_per_email']:.2f}x that."
        )
    t = a["local_throughput"]
    out.append(
        f"Local throughput: {t['emails_per_second']:.1f} emails/s enqueue to SES-accepted "
        f"({t['emails']:.0f} emails in {t['seconds']:.1f} s, moto server, one process)."
    )
    cap = results["capacity"]
    rows = [
        [name, f"{c['emails_per_second']:,.1f}", f"{c['emails_per_hour']:,}"]
        for name, c in sorted(cap["ceilings_at_defaults"].items(), key=lambda item: item[1]["emails_per_second"])
    ]
    out.append(_table("Ceilings at the template's defaults (lowest first)", ["", "emails/s", "emails/hour"], rows))
    plans = cap["plans"]
    names = list(next(iter(plans.values())))
    rows = [[name, *(f"{plans[volume][name]:,}" for volume in plans)] for name in names]
    out.append(
        _table(
            f"What each daily volume needs ({cap['headroom_over_daily_average']:g}x the average rate)",
            ["", *plans],
            rows,
        )
    )
    out.append(send_rate.report(results["send_rate"]))
    goals = results["goals"]
    out.append(
        _table(
            "Goals",
            ["", "measured", "goal", ""],
            [[g["name"], g["measured"], g["goal"], "met" if g["met"] else "MISSED"] for g in goals],
        )
    )
    return "\n\n".join(out)


def goals(results: dict[str, Any]) -> list[dict[str, Any]]:
    a = results["analysis"]
    totals = a["cost_totals_usd_per_million_emails"]
    checks = [
        ("infra $/M, batch path", totals["batch"], GOALS["batch_path_usd_per_million"]),
        ("infra $/M, single path", totals["single"], GOALS["single_path_usd_per_million"]),
    ]
    checks += [
        (f"init / floor, {name}", c["ratio"], GOALS["init_to_floor_ratio"]) for name, c in results["cold_start"].items()
    ]
    checks.append(
        ("DynamoDB WRU per email life", a["dynamodb_wru_per_email_life"], GOALS["dynamodb_wru_per_email_life"])
    )
    sender = results["warm_cpu"]["sender, batches of 10"]["cpu_ms_per_email"]
    checks.append(("sender CPU ms per email", sender, GOALS["sender_cpu_ms_per_email"]))
    return [
        {"name": name, "measured": f"{value:.3g}", "goal": f"<= {goal:g}", "met": value <= goal}
        for name, value, goal in checks
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9, help="cold-start runs per function (median)")
    parser.add_argument("--quick", action="store_true", help="fewer emails and runs, for a smoke test")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    prices = json.loads(PRICES.read_text())
    template = load_template()
    print("bench: emails through the local stack …", file=sys.stderr, flush=True)
    small = {"singles": 5, "idempotent": 3, "retried": 5, "throughput_emails": 100}
    life = lifecycle.run(**(small if args.quick else {}))
    analysis = analyse(life, template, prices)
    samples = _stub_samples(life)
    with layer_site() as site:
        print("bench: cold starts …", file=sys.stderr, flush=True)
        cold = cold_starts(template, 3 if args.quick else args.runs, site)
        print("bench: warm CPU …", file=sys.stderr, flush=True)
        warm = warm_cpu(template, samples, args.quick, site)
    print("bench: webhooks …", file=sys.stderr, flush=True)
    webhooks = webhook_bench.run(prices, batches=10 if args.quick else 30)
    layer = layer_size()
    pace = send_rate.measure(
        5.0 if args.quick else 15.0, progress=lambda text: print(f"bench: {text}", file=sys.stderr, flush=True)
    )
    results: dict[str, Any] = {
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"python": sys.version.split()[0], "platform": sys.platform, "cpus": os.cpu_count()},
        "prices_as_of": prices["as_of"],
        "prices_region": prices["region"],
        "analysis": analysis,
        "cold_start": cold,
        "warm_cpu": warm,
        "layer": layer,
        "webhooks": webhooks,
        "send_rate": pace,
    }
    results["capacity"] = capacity(template, analysis, json.loads(LIMITS.read_text()))
    results["goals"] = goals(results) + pace["goals"]
    results["bench_seconds"] = round(time.perf_counter() - started, 1)
    args.out.write_text(json.dumps(results, indent=2, default=_json_default) + "\n")
    print(report(results))
    print("\n" + webhook_bench.report(webhooks))
    print(
        f"\nwrote {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out} "
        f"in {results['bench_seconds']:.0f} s"
    )
    return 0


def _stub_samples(life: LifecycleResult) -> dict[str, Any]:
    """Items the stubs answer with in the warm probe: a content record and a status record per status."""
    by_label = life.recorder.samples
    samples: dict[str, Any] = {}
    for label, item in by_label.items():
        parts = label.split(":")
        if parts[0].endswith("EmailsTable") and parts[1] == "content":
            samples["content"] = item
        elif parts[0].endswith("EmailsTable") and parts[1] == "status":
            samples[parts[2]] = item
    return samples


if __name__ == "__main__":
    sys.exit(main())
