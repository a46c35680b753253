"""The chaos run inside the suite: a few hundred emails through the local stack under every fault, nothing lost.

``make chaos`` runs the same with 2,000 emails and writes its figures into docs/reliability.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from mailqueue.records import StatusRecord
from mailqueue_dev import chaos
from mailqueue_dev.chaos import Acceptance, ChaosConfig, ChaosReport, ChaosRun, Faults

IDS = [f"01JCHA{n:020d}" for n in range(4)]


# Every fault kind of the main run, each of which must strike at least once.
FAULT_KINDS = {
    "sqs_publish_failed",
    "sqs_delivered_twice",
    "sqs_delivered_then_error",
    "dynamodb_write_failed",
    "dynamodb_answer_lost_once",
    "dynamodb_call_answer_lost",
    "ses_throttled",
    "ses_server_error",
    "ses_account_paused",
    "ses_rejected",
    "ses_timeout_before_send",
    "ses_timeout_after_accept",
    "sender_died_after_accept",
    "requeue_runs_overlapped",
    "event_delivered_twice",
    "delivery_before_send",
}


@pytest.mark.e2e
def test_nothing_is_lost_or_sent_twice_outside_the_windows_under_faults(tmp_path: Path) -> None:
    report = chaos.run(ChaosConfig(emails=300, drain_timeout=120), tmp_path)

    summary = "\n".join(report.lines())
    assert report.ok, summary
    assert report.accepted == 300, summary
    assert report.lost == [], summary
    assert report.stuck == {}, summary
    assert report.sent_twice_outside_windows == [], summary
    assert report.ses_accepted == report.ses_recorded_by_moto, summary
    assert report.sent + sum(report.failed.values()) + report.cancelled == report.accepted, summary
    assert {name for name, count in report.faults.items() if count} >= FAULT_KINDS, summary


@pytest.mark.e2e
def test_lost_answers_at_enqueue_and_an_unverified_identity_lose_nothing(tmp_path: Path) -> None:
    faults = Faults.only(enqueue_answer_lost=0.3, ses_identity_unverified=0.3)
    report = chaos.run(ChaosConfig(emails=40, cancels=0, drain_timeout=120, faults=faults), tmp_path)

    summary = "\n".join(report.lines())
    assert report.faults.get("dynamodb_call_answer_lost: enqueue status"), summary
    assert report.faults.get("ses_identity_unverified"), summary
    assert report.ok, summary


# --- the count catches what it must: a run that cannot fail proves nothing -----------------------------------


def counted(
    tmp_path: Path,
    records: dict[str, StatusRecord],
    sends: dict[str, list[Acceptance]],
    sent_write_failures: dict[str, int] | None = None,
    unseen: dict[str, list[str]] | None = None,
    claims: dict[str, list[int]] | None = None,
    proofs: dict[str, list[tuple[int, str]]] | None = None,
) -> ChaosReport:
    """Count a made-up outcome of a run of the 4 emails IDS, without running it.

    ``sends`` are what the hooks saw SES accept; SES's record holds those, after the ``unseen`` ones.
    Unless ``claims`` says otherwise, each send was claimed just before its SES call.
    """
    run = ChaosRun(ChaosConfig(emails=4, cancels=0), tmp_path)
    for index, email_id in enumerate(IDS):
        run.ledger.accepted[email_id] = index
    run.ledger.acceptances.update(sends)
    for email_id, sequence in (sent_write_failures or {}).items():
        run.ledger.sent_write_failures[email_id].append(sequence)
    if claims is None:
        claims = {
            email_id: [item.call_sequence - 1 for item in items if item.call_sequence is not None]
            for email_id, items in sends.items()
        }
    run.ledger.claims.update(claims)
    run.ledger.proofs.update(proofs or {})
    report = ChaosReport(emails=4, seed=0)
    ses_record = {email_id: [item.message_id for item in items] for email_id, items in sends.items()}
    for email_id, message_ids in (unseen or {}).items():
        ses_record[email_id] = [*message_ids, *ses_record.get(email_id, [])]
    run._count(report, records, ses_record)
    return report


def accepted(sequence: int, kind: str = "clean") -> Acceptance:
    """SES's acceptance of a send whose call started at ``10 * sequence`` and was accepted just after."""
    return Acceptance(10 * sequence + 1, kind, f"m{sequence}", call_sequence=10 * sequence)


def record(email_id: str, status: str, **extra: Any) -> StatusRecord:
    item = {"pk": email_id, "status": status, "attempts": 1, "history": [{"status": "queued"}], **extra}
    return StatusRecord.from_item(item)


def test_the_count_passes_a_clean_outcome(tmp_path: Path) -> None:
    records = {email_id: record(email_id, "sent") for email_id in IDS}
    records[IDS[0]] = record(IDS[0], "sent", history=[{"status": "queued"}, {"status": "sending"}, {"status": "sent"}])
    sends = {email_id: [Acceptance(n, "clean", f"m{n}")] for n, email_id in enumerate(IDS)}

    report = counted(tmp_path, records, sends)

    assert report.problems == []
    assert report.sent == 4


def test_the_count_flags_lost_stuck_and_unexplained_duplicates(tmp_path: Path) -> None:
    records = {
        IDS[0]: record(IDS[0], "sent"),  # sent twice, the first answer recorded
        IDS[1]: record(IDS[1], "retrying", deadline="2030-01-01T00:00:00.000Z"),  # stuck
        IDS[2]: record(IDS[2], "sent"),  # recorded sent, never accepted by SES
        # IDS[3]: gone from the table
    }
    sends = {IDS[0]: [Acceptance(1, "clean", "m1"), Acceptance(2, "clean", "m2")]}

    report = counted(tmp_path, records, sends)

    assert sorted(report.lost) == [IDS[2], IDS[3]]
    assert report.stuck == {IDS[1]: "retrying"}
    assert report.sent_twice_outside_windows == [IDS[0]]
    assert any("sent twice outside the window" in problem for problem in report.problems)
    assert not report.ok


def test_an_email_stored_for_a_request_whose_answer_never_came_is_counted_like_any_other(tmp_path: Path) -> None:
    # Emails 2 and 3: their requests timed out at the client. Email 2's was stored, and is stuck.
    records = {email_id: record(email_id, "sent", to=f"r{n}@example.org") for n, email_id in enumerate(IDS)}
    records[IDS[2]] = record(IDS[2], "queued", to="r2@example.org", deadline="2030-01-01T00:00:00.000Z")
    sends = {email_id: [Acceptance(n, "clean", f"m{n}")] for n, email_id in enumerate(IDS[:2])}
    run = ChaosRun(ChaosConfig(emails=4, cancels=0), tmp_path)
    run.ledger.accepted.update({IDS[0]: 0, IDS[1]: 1})
    run.ledger.acceptances.update(sends)
    run.ledger.claims.update({email_id: [items[0].sequence - 1] for email_id, items in sends.items()})
    run.ledger.unanswered.update({2, 3})
    del records[IDS[3]]  # email 3's request never reached the table
    report = ChaosReport(emails=4, seed=0)

    run._count(report, records, {email_id: [item.message_id for item in items] for email_id, items in sends.items()})

    assert (report.unanswered_stored, report.unanswered_not_stored) == (1, 1)
    assert report.accepted == 3
    assert report.stuck == {IDS[2]: "queued"}
    assert not any("never answered" in problem for problem in report.problems)

    # Stored, though no request for it went unanswered: that is still a problem.
    run.ledger.unanswered.clear()
    del run.ledger.accepted[IDS[2]]
    report = ChaosReport(emails=4, seed=0)
    run._count(report, records, {email_id: [item.message_id for item in items] for email_id, items in sends.items()})
    assert any(f"{IDS[2]} is stored but its enqueue was never answered" in problem for problem in report.problems)


def test_the_count_explains_a_second_send_after_an_unrecorded_acceptance(tmp_path: Path) -> None:
    records = {email_id: record(email_id, "sent") for email_id in IDS}
    sends = {
        IDS[0]: [accepted(1, "ses_timeout_after_accept"), accepted(5)],
        IDS[1]: [accepted(2, "sender_died_after_accept"), accepted(6)],
        IDS[2]: [accepted(3), accepted(7)],
        IDS[3]: [accepted(4)],
    }
    # The `sent` write after the first send of IDS[2] failed; SES's event about the first send of
    # IDS[0] was handled, but only after the second attempt had been claimed (at 49).
    report = counted(tmp_path, records, sends, sent_write_failures={IDS[2]: 35}, proofs={IDS[0]: [(50, "m1")]})

    assert report.problems == []
    assert report.extra_sends_by_window == {
        "ses_timeout_after_accept": 1,
        "sender_died_after_accept": 1,
        "sent_write_failed": 1,
    }


def test_a_second_send_claimed_after_ses_proved_the_first_is_outside_the_window(tmp_path: Path) -> None:
    records = {email_id: record(email_id, "sent") for email_id in IDS}
    sends = {
        IDS[0]: [accepted(1, "ses_timeout_after_accept"), accepted(5)],
        IDS[1]: [accepted(2, "sender_died_after_accept"), accepted(6)],
        IDS[2]: [accepted(3), accepted(7)],
        IDS[3]: [accepted(4)],
    }
    # The events function had handled SES's proof of each first send before the second was claimed
    # (at 49, 59 and 69): the answer was lost, but the event was not.
    proofs = {IDS[0]: [(48, "m1")], IDS[1]: [(30, "m2")], IDS[2]: [(68, "m3")]}

    report = counted(tmp_path, records, sends, sent_write_failures={IDS[2]: 35}, proofs=proofs)

    assert report.sent_twice_outside_windows == IDS[:3]
    assert sum(1 for problem in report.problems if "SES's event proving send 1 had been handled" in problem) == 3
    assert report.extra_sends_by_window == {}
    assert not report.ok


def test_an_event_about_another_email_or_a_later_send_proves_nothing_about_this_one(tmp_path: Path) -> None:
    records = {email_id: record(email_id, "sent") for email_id in IDS}
    sends = {email_id: [accepted(n)] for n, email_id in enumerate(IDS)}
    sends[IDS[0]] = [accepted(1, "ses_timeout_after_accept"), accepted(5)]
    # Before the repeat's claim (at 49): an event about another email, and one about the repeat itself.
    proofs = {IDS[1]: [(12, "m1")], IDS[0]: [(48, "m5")]}

    report = counted(tmp_path, records, sends, proofs=proofs)

    assert report.problems == []
    assert report.extra_sends_by_window == {"ses_timeout_after_accept": 1}


def test_a_repeat_without_a_claim_the_hooks_saw_fails_the_count(tmp_path: Path) -> None:
    records = {email_id: record(email_id, "sent") for email_id in IDS}
    sends = {email_id: [accepted(n)] for n, email_id in enumerate(IDS)}
    sends[IDS[0]] = [accepted(1, "ses_timeout_after_accept"), accepted(5)]

    report = counted(tmp_path, records, sends, claims={IDS[0]: [9]})

    assert report.sent_twice_outside_windows == [IDS[0]]
    assert any("the hooks saw no claim before it" in problem for problem in report.problems)


def test_a_send_only_ses_recorded_is_an_answer_the_sender_never_got(tmp_path: Path) -> None:
    records = {email_id: record(email_id, "sent") for email_id in IDS}
    sends = {email_id: [accepted(n)] for n, email_id in enumerate(IDS)}
    sends[IDS[0]] = [accepted(7)]

    # SES took IDS[0] once before, but its answer never reached the sender (a read timeout).
    report = counted(tmp_path, records, sends, unseen={IDS[0]: ["m-lost"]})

    assert report.problems == [], report.problems
    assert report.extra_sends_by_window == {"answer_lost": 1}
    assert report.ses_recorded_by_moto == 5


def test_the_count_flags_a_failure_that_is_neither_permanent_nor_exhausted(tmp_path: Path) -> None:
    records = {email_id: record(email_id, "sent") for email_id in IDS}
    records[IDS[0]] = record(IDS[0], "failed", last_error={"code": "TooManyRequestsException"})
    records[IDS[1]] = record(IDS[1], "failed", last_error={"code": "MessageRejected"})
    sends = {email_id: [Acceptance(n, "clean", "m")] for n, email_id in enumerate(IDS[2:])}

    report = counted(tmp_path, records, sends)

    assert report.failed == {"TooManyRequestsException (not allowed)": 1, "MessageRejected (permanent)": 1}
    assert report.lost == [IDS[0]]


def test_the_faults_of_an_email_are_the_same_in_every_run() -> None:
    config = ChaosConfig(emails=200)
    plans = chaos.plan_emails(config)

    first = [chaos.ses_fault(config, plan, attempt) for plan in plans for attempt in (1, 2, 3)]
    again = [chaos.ses_fault(config, plan, attempt) for plan in chaos.plan_emails(config) for attempt in (1, 2, 3)]

    assert first == again
    assert {fault for fault in first if fault} >= {"ses_throttled", "ses_server_error", "ses_rejected"}
    assert sum(1 for plan in plans if plan.cancel) == config.cancel_count
