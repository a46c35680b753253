"""The run's report: its figures, in the terminal, as JSON and in docs/reliability.md."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

DOC_BEGIN = "<!-- chaos:begin -->"
DOC_END = "<!-- chaos:end -->"


# --- the report -----------------------------------------------------------------------------------------------


@dataclass
class ChaosReport:
    emails: int
    seed: int
    accepted: int = 0
    accepted_single: int = 0
    accepted_in_batches: int = 0
    # Enqueued emails whose answer never reached the client or was `unconfirmed`: found stored, and not.
    unanswered_stored: int = 0
    unanswered_not_stored: int = 0
    sent: int = 0
    delivered: int = 0
    failed: dict[str, int] = field(default_factory=dict)
    cancelled: int = 0
    cancel_refused: int = 0
    lost: list[str] = field(default_factory=list)
    stuck: dict[str, str] = field(default_factory=dict)
    ses_accepted: int = 0
    ses_recorded_by_moto: int = 0
    sent_twice: int = 0
    sent_twice_outside_windows: list[str] = field(default_factory=list)
    extra_sends_by_window: dict[str, int] = field(default_factory=dict)
    sent_in_window_yet_not_sent: dict[str, int] = field(default_factory=dict)
    faults: dict[str, int] = field(default_factory=dict)
    # Emails per path of an email's life (scheduled, held, retried by request, cancelled mid-way…).
    paths: dict[str, int] = field(default_factory=dict)
    events: dict[str, int] = field(default_factory=dict)
    requeue_runs: dict[str, int] = field(default_factory=dict)
    # How late (past its drawn delay) the latest SES event reached the events function.
    event_latest_seconds: float = 0.0
    seconds_to_drain: float = 0.0
    seconds_after_last_enqueue: float = 0.0
    seconds_total: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def fault_kinds(self) -> int:
        return sum(1 for name, count in self.faults.items() if count and not is_detail(name))

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok, "fault_kinds": self.fault_kinds}

    def _rows(self) -> list[tuple[str, str]]:
        failed = sum(self.failed.values())
        windows = {name: count for name, count in self.extra_sends_by_window.items() if name != _DESPITE_EVENT}
        late = self.extra_sends_by_window.get(_DESPITE_EVENT, 0)
        answered = self.ses_recorded_by_moto - self.ses_accepted
        return [
            ("emails enqueued", f"{self.emails} (seed {self.seed})"),
            ("accepted", f"{self.accepted} ({self.accepted_single} single, {self.accepted_in_batches} in batches)"),
            (
                "answers lost, or unconfirmed",
                f"{self.unanswered_stored + self.unanswered_not_stored} emails: {self.unanswered_stored} found "
                f"stored (counted as accepted), {self.unanswered_not_stored} not",
            ),
            ("sent", f"{self.sent} (of which {self.delivered} delivered, by SES's events)"),
            ("failed", f"{failed}" + "".join(f"; {reason} {count}" for reason, count in sorted(self.failed.items()))),
            ("cancelled", f"{self.cancelled} (and {self.cancel_refused} cancels refused: already sending or sent)"),
            ("**lost**", f"**{len(self.lost)}**"),
            ("**stuck live**", f"**{len(self.stuck)}**"),
            (
                "SES sends",
                f"{self.ses_recorded_by_moto} in SES's record"
                + (f", {answered} of them never answered to the sender" if answered else ""),
            ),
            ("**sent twice outside the windows**", f"**{len(self.sent_twice_outside_windows)}**"),
            (
                "sent twice inside the windows",
                f"emails {self.sent_twice}, extra sends {sum(windows.values())}"
                + "".join(f"; {WINDOWS.get(name, name)} {count}" for name, count in sorted(windows.items()))
                + (f" ({late} although SES's event was on its way: it came too late)" if late else ""),
            ),
            (
                "time to drain",
                f"{self.seconds_to_drain:.0f} s ({self.seconds_after_last_enqueue:.0f} s after the last enqueue)",
            ),
        ]

    def _faults(self, indent: str) -> list[tuple[str, int]]:
        """Each fault's label and count; a detail of the fault above it is indented."""
        return [
            (f"{indent if is_detail(name) else ''}{_label(name)}", count)
            for name, count in sorted(self.faults.items(), key=_fault_order)
        ]

    def lines(self) -> list[str]:
        lines = [f"{name.strip('*'):<34} {value.strip('*')}" for name, value in self._rows()]
        if self.sent_in_window_yet_not_sent:
            unsettled = ", ".join(
                f"{status} {count}" for status, count in sorted(self.sent_in_window_yet_not_sent.items())
            )
            lines.append(f"{'accepted by SES in a window, yet':<34} {unsettled}")
        lines.append("paths of an email's life")
        lines += [f"  {name:<70} {count}" for name, count in self.paths.items()]
        lines.append(f"faults injected ({self.fault_kinds} kinds)")
        lines += [f"  {name:<70} {count}" for name, count in self._faults("  ")]
        lines.append(f"SES events (the latest handed over {self.event_latest_seconds:.1f} s past its delay)")
        lines += [f"  {name:<70} {count}" for name, count in sorted(self.events.items())]
        lines.append("requeue runs beside the schedule")
        lines += [f"  {name:<70} {count}" for name, count in sorted(self.requeue_runs.items())]
        lines.append(f"{'result':<34} " + ("PASS" if self.ok else "FAIL"))
        lines += [f"  problem: {problem}" for problem in self.problems]
        return lines

    def markdown(self) -> str:
        table = ["| figure | value |", "|---|---|", *(f"| {name} | {value} |" for name, value in self._rows())]
        faults = [
            "| fault injected | count |",
            "|---|---|",
            *(f"| {name} | {count} |" for name, count in self._faults("&nbsp;&nbsp;&nbsp;&nbsp;")),
        ]
        paths = [
            "| path of an email's life | emails |",
            "|---|---|",
            *(f"| {k} | {v} |" for k, v in self.paths.items()),
        ]
        events = [
            "| SES event | count |",
            "|---|---|",
            *(f"| {name} | {count} |" for name, count in sorted(self.events.items())),
        ]
        return "\n".join([*table, "", *paths, "", *faults, "", *events])


FAULTS = {
    "sqs_publish_failed": "SQS publish failed (calls)",
    "sqs_publish_failed_messages": "emails those calls carried",
    "sqs_delivered_twice": "SQS delivered a message twice",
    "sqs_delivered_then_error": "SQS took a publish but answered 500 (published again, or the call failed)",
    "dynamodb_throttled_then_retried": "DynamoDB throttled a write attempt; botocore retried it",
    "dynamodb_write_failed": "DynamoDB throttled a write through its retries: the call failed",
    "dynamodb_sent_write_failed": "of which the `sent` write after SES accepted",
    "dynamodb_answer_lost_once": "DynamoDB wrote, its answer was lost (timeout, reset); botocore tried again",
    "dynamodb_call_answer_lost": "DynamoDB wrote, the answer to every attempt was lost: the call failed",
    "ses_throttled": "SES throttled",
    "ses_server_error": "SES answered 500 or 503",
    "ses_account_paused": "SES: sending paused for the account",
    "ses_identity_unverified": "SES: the sending identity is not verified",
    "ses_rejected": "SES rejected the email for good",
    "ses_timeout_before_send": "SES timed out before it got the request",
    "ses_timeout_after_accept": "SES timed out after it accepted the email",
    "sender_died_after_accept": "the sender died after SES accepted, before writing `sent`",
    "requeue_runs_overlapped": "two requeue runs at once, beside the schedule",
    "event_delivered_twice": "an SES event delivered twice",
    "delivery_before_send": "SES's Delivery event due before its Send event",
}
WINDOWS = {
    "ses_timeout_after_accept": "unknown outcome (timed out after SES accepted)",
    "answer_lost": "unknown outcome (SES's answer never reached the sender)",
    "sender_died_after_accept": "the sender died after SES accepted",
    "sent_write_failed": "the `sent` write failed after SES accepted",
}


def _fault_order(item: tuple[str, int]) -> tuple[int, str]:
    """Each fault in the order of FAULTS, its details (``kind: what``) right after it."""
    kind = item[0].split(": ", 1)[0]
    return (list(FAULTS).index(kind) if kind in FAULTS else len(FAULTS), item[0])


def _label(name: str) -> str:
    kind, _, what = name.partition(": ")
    return f"{what}" if what else FAULTS.get(kind, kind)


def is_detail(name: str) -> bool:
    """Whether a fault counter details another one rather than counting a fault of its own."""
    return name in _FAULT_DETAILS or ": " in name


# Repeats whose earlier send had an SES event on its way, which came too late to settle it.
_DESPITE_EVENT = "despite_an_event"
# Counters that detail another fault rather than count one of their own.
_FAULT_DETAILS = frozenset({"sqs_publish_failed_messages", "dynamodb_sent_write_failed"})


def update_doc(path: Path, report: ChaosReport, changed: dict[str, float] | None = None) -> None:
    """Replace the figures between the chaos markers of ``path`` with this run's."""
    text = path.read_text(encoding="utf-8")
    if DOC_BEGIN not in text or DOC_END not in text:
        raise ValueError(f"{path} has no {DOC_BEGIN} … {DOC_END} block")
    head, rest = text.split(DOC_BEGIN, 1)
    _, tail = rest.split(DOC_END, 1)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d")
    block = f"{DOC_BEGIN}\nLast `make chaos` run: {stamp}, {report.emails} emails, seed {report.seed}, "
    block += (
        f"{report.fault_kinds} fault kinds, {'passed' if report.ok else 'FAILED'}"
        + "".join(f"; `--fault {name}={rate:g}`" for name, rate in sorted((changed or {}).items()))
        + f".\n\n{report.markdown()}\n{DOC_END}"
    )
    path.write_text(head + block + tail, encoding="utf-8")
