"""The count: what SES accepted, per email, against the table; the strict window."""

from __future__ import annotations

import itertools
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mailqueue_dev.chaos.ledger import Acceptance, Ledger
from mailqueue_dev.chaos.plan import ChaosConfig, EmailPlan
from mailqueue_dev.chaos.report import _DESPITE_EVENT, ChaosReport

if TYPE_CHECKING:
    from mailqueue.records import StatusRecord

LIVE = frozenset({"scheduled", "queued", "sending", "retrying"})
SENT_OR_LATER = frozenset({"sent", "delivered", "bounced", "complained"})


@dataclass
class Count:
    """Counts, per email, what SES accepted against what the table says."""

    config: ChaosConfig
    plans: list[EmailPlan]
    ledger: Ledger

    def count(self, report: ChaosReport, records: dict[str, StatusRecord], moto_sends: dict[str, list[str]]) -> None:
        from mailqueue.ses_errors import SendOutcome, classify_code  # noqa: PLC0415
        from mailqueue.settings import get_settings  # noqa: PLC0415

        ledger = self.ledger
        max_attempts = get_settings().max_attempts
        problems = report.problems
        self._adopt_unanswered(report, records)
        report.accepted = len(ledger.accepted)
        report.accepted_in_batches = sum(1 for index in ledger.accepted.values() if self.plans[index].batch)
        report.accepted_single = report.accepted - report.accepted_in_batches
        report.faults = dict(ledger.faults)
        report.events = dict(ledger.events)
        report.requeue_runs = dict(ledger.requeue_runs)
        report.ses_accepted = sum(len(items) for items in ledger.acceptances.values())
        report.ses_recorded_by_moto = sum(len(items) for items in moto_sends.values())
        problems += [f"the API refused or failed: {error}" for error in ledger.api_errors[:20]]
        expected = self.config.emails - report.unanswered_not_stored
        if report.accepted < expected:
            problems.append(f"only {report.accepted} of {expected} emails were accepted")
        seen_by_hooks = {item.message_id for items in ledger.acceptances.values() for item in items}
        recorded = {message_id for items in moto_sends.values() for message_id in items}
        if seen_by_hooks - recorded:
            problems.append(f"{len(seen_by_hooks - recorded)} sends the hooks saw accepted are not in SES's record")

        failed: Counter[str] = Counter()
        windows: Counter[str] = Counter()
        unsettled: Counter[str] = Counter()
        for email_id in sorted(set(records) - set(ledger.accepted)):
            problems.append(f"{email_id} is stored but its enqueue was never answered with its id")
        for email_id, index in sorted(ledger.accepted.items()):
            plan = self.plans[index]
            record = records.get(email_id)
            sends = self._sends(email_id, moto_sends.get(email_id, []))
            if record is None:
                report.lost.append(email_id)
                problems.append(f"{email_id} (email {index}) was accepted and is gone from the table")
                continue
            status = record.status.value
            told = f"{email_id} (email {index}, {_story(record)})"
            problems += [f"{told}: {forbidden}" for forbidden in _forbidden_transitions(record)]
            if plan.fate != "rejected" and any(
                entry.get("status") == "failed" and "MessageRejected" in str(entry.get("reason", ""))
                for entry in record.history
            ):
                # Only the sending identity's verification makes SES reject an email the plan did not doom.
                problems.append(f"{told} was failed by an unverified identity, an error that must hold it")
            if status in LIVE:
                report.stuck[email_id] = status
                problems.append(f"{told} is still {status}")
                continue
            in_window, outside = self._duplicates(email_id, sends, windows)
            if outside:
                report.sent_twice_outside_windows.append(email_id)
                problems += [f"{told} was sent twice outside the window: {why}" for why in outside]
            if status in SENT_OR_LATER:
                report.sent += 1
                report.delivered += status == "delivered"
                if not sends:
                    report.lost.append(email_id)
                    problems.append(f"{told} is {status} but SES never accepted it")
            elif status == "failed":
                code = record.error_code or "unknown"
                if classify_code(code) is SendOutcome.PERMANENT:
                    failed[f"{code} (permanent)"] += 1
                elif record.attempts >= max_attempts:
                    failed[f"{code} (attempts exhausted)"] += 1
                else:
                    failed[f"{code} (not allowed)"] += 1
                    report.lost.append(email_id)
                    problems.append(f"{told} failed for a reason that may not fail an email: {code}")
                if sends:
                    unsettled["failed"] += 1
                    if not in_window:
                        problems.append(f"{told} is failed, yet SES accepted it")
            elif status == "cancelled":
                report.cancelled += 1
                if ledger.cancel_answers.get(email_id) != 200:
                    report.lost.append(email_id)
                    problems.append(f"{told} is cancelled, but no cancel of it succeeded")
                if sends:
                    unsettled["cancelled"] += 1
                    if not in_window:
                        problems.append(f"{told} was cancelled, yet SES accepted it")
            if plan.cancel == "scheduled" and ledger.cancel_answers.get(email_id) != 200:
                problems.append(f"the cancel of scheduled {told} answered {ledger.cancel_answers.get(email_id)}")
        report.cancel_refused = sum(1 for answer in ledger.cancel_answers.values() if answer == 409)
        report.paths = self._paths(records)
        report.failed = dict(failed)
        report.extra_sends_by_window = dict(windows)
        report.sent_in_window_yet_not_sent = dict(unsettled)
        report.sent_twice = sum(1 for sends in moto_sends.values() if len(sends) > 1)

    def _adopt_unanswered(self, report: ChaosReport, records: dict[str, StatusRecord]) -> None:
        """Count as accepted the stored emails of requests whose answer never reached the client."""
        ledger = self.ledger
        stored: set[int] = set()
        for email_id in set(records) - set(ledger.accepted):
            found = re.fullmatch(r"r(\d+)@example\.org", records[email_id].to or "")
            if found and int(found.group(1)) in ledger.unanswered:
                ledger.accepted[email_id] = int(found.group(1))
                stored.add(int(found.group(1)))
        report.unanswered_stored = len(stored)
        report.unanswered_not_stored = len(ledger.unanswered - stored)

    def _paths(self, records: dict[str, StatusRecord]) -> dict[str, int]:
        """How many emails took each path of an email's life that the run sets out to cover."""
        paths: Counter[str] = Counter()
        for email_id, index in self.ledger.accepted.items():
            record = records.get(email_id)
            history = record.history if record else ()
            plan = self.plans[index]
            if history and history[0].get("status") == "scheduled" and plan.cancel != "scheduled":
                paths["scheduled beyond SQS's delay, released by the requeue function"] += 1
            if any(str(entry.get("reason", "")).startswith("held:") for entry in history):
                paths["held by an account or configuration error, then released"] += 1
            if record and record.status == "failed" and "attempt" in str(history[-1].get("reason", "")):
                paths["failed after its last attempt"] += 1
            if plan.cancel == "racing":
                answer = self.ledger.cancel_answers.get(email_id)
                paths[f"cancelled at a random moment: answered {answer}"] += 1
        for answer in self.ledger.retried.values():
            paths[f"failed, retried by request: answered {answer}"] += 1
        return dict(sorted(paths.items()))

    def _sends(self, email_id: str, message_ids: list[str]) -> list[Acceptance]:
        """Every send SES accepted for the email, in SES's order, with what the hooks saw of each.

        A send the hooks never saw is one whose answer never reached the sender (the emulator took
        longer than the client's read timeout): an unknown outcome the run did not inject.
        """
        seen = {item.message_id: item for item in self.ledger.acceptances.get(email_id, [])}
        return [seen.get(message_id) or Acceptance(None, "answer_lost", message_id) for message_id in message_ids]

    def _duplicates(self, email_id: str, sends: list[Acceptance], windows: Counter[str]) -> tuple[bool, list[str]]:
        """Count each send after the first by the window it came through; say why any other repeat is not in it.

        A repeat is inside the window only when, for the send before it, SES's answer never reached
        the sender (or the `sent` write after it was lost) **and** no event proving that SES accepted
        the email had been handled by the events function before the repeat's claim was requested.
        Returns whether the email had a send whose acceptance went unrecorded at all, and a sentence
        for every repeat outside the window.
        """
        failures = self.ledger.sent_write_failures.get(email_id, [])
        claims = sorted(self.ledger.claims.get(email_id, []))
        proofs = self.ledger.proofs.get(email_id, [])
        later_hooked = [item.sequence for item in sends if item.sequence is not None]

        def unrecorded(item: Acceptance) -> str | None:
            """Why SES's acceptance of ``item`` was never recorded as sent, if it was not."""
            if item.kind != "clean":
                return item.kind
            following = [
                sequence for sequence in later_hooked if item.sequence is not None and sequence > item.sequence
            ]
            until = min(following, default=None)
            if any(item.sequence is not None and item.sequence < f and (until is None or f < until) for f in failures):
                return "sent_write_failed"
            return None

        def claim_of(earlier: Acceptance, later: Acceptance) -> int | None:
            """When the claim that led to ``later`` was requested: the latest claim between the two SES calls."""
            after = earlier.call_sequence if earlier.call_sequence is not None else earlier.sequence or 0
            between = [claim for claim in claims if claim > after]
            if later.call_sequence is not None:
                return max((claim for claim in between if claim < later.call_sequence), default=None)
            # The call of a send only SES's record shows is unknown: the first claim after the earlier send.
            return min(between, default=None)

        outside: list[str] = []
        for position, (earlier, later) in enumerate(itertools.pairwise(sends), start=1):
            window = unrecorded(earlier)
            if window is None:
                outside.append(f"send {position + 1} followed send {position}, whose acceptance was recorded")
                continue
            claim = claim_of(earlier, later)
            if claim is None:
                outside.append(f"send {position + 1}: the hooks saw no claim before it")
                continue
            proven = {acceptance.message_id for acceptance in sends[:position]}
            early = [sequence for sequence, message_id in proofs if message_id in proven and sequence < claim]
            if early:
                outside.append(
                    f"send {position + 1} was claimed after SES's event proving send {position} had been handled"
                )
                continue
            windows[window] += 1
            if earlier.message_id in self.ledger.with_events:
                windows[_DESPITE_EVENT] += 1
        return any(unrecorded(item) is not None for item in sends), outside


def _story(record: StatusRecord) -> str:
    """An email's history, short: what a failed run should print about it."""
    steps = [
        f"{entry.get('status')}" + (f" ({entry['reason']})" if entry.get("reason") else "") for entry in record.history
    ]
    return "history: " + " > ".join(steps)[:600]


def _forbidden_transitions(record: StatusRecord) -> list[str]:
    """Transitions in the email's history that the state machine does not allow."""
    from mailqueue.statemachine import ALLOWED, HISTORY_LIMIT, Status  # noqa: PLC0415

    history = record.history
    statuses = [Status(entry["status"]) for entry in history]
    # A trimmed history (it keeps its first entry and the latest) skips entries after the first.
    start = 1 if len(history) >= HISTORY_LIMIT else 0
    found = []
    for before, after, entry in zip(statuses[start:], statuses[start + 1 :], history[start + 1 :], strict=False):
        # Failing a queued email with no attempts left claims it first; the history omits that claim.
        bridged = before is Status.QUEUED and after is Status.FAILED and "attempts exhausted" in entry.get("reason", "")
        if after not in ALLOWED[before] and not bridged:
            found.append(f"went from {before} to {after}, which the state machine forbids")
    return found


def _moto_sends() -> dict[str, list[str]]:
    """The message ids SES (moto, in this process) accepted for each email, in order, by the Message-ID the
    renderer sets."""
    from moto.core.models import DEFAULT_ACCOUNT_ID  # noqa: PLC0415
    from moto.ses.models import ses_backends  # noqa: PLC0415

    pattern = re.compile(r"^Message-ID:\s*<([0-9A-HJKMNP-TV-Z]{26})@", re.IGNORECASE | re.MULTILINE)
    sends: dict[str, list[str]] = defaultdict(list)
    for message in list(ses_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].sent_messages):
        raw = getattr(message, "raw_data", "") or ""
        found = pattern.search(raw if isinstance(raw, str) else raw.decode(errors="replace"))
        if found:
            sends[found.group(1)].append(str(message.id))
    return dict(sends)
