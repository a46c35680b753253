"""The chaos run: thousands of emails through the local stack while AWS misbehaves, then a count.

``python -m mailqueue_dev.chaos`` (what ``make chaos`` runs) starts the local stack
(:class:`mailqueue_dev.local.LocalStack`: moto on loopback, the template's resources, the real
handlers behind the local API, SQS pollers and the requeue schedule), enqueues emails over HTTP
(single and in batches, some a few seconds ahead, some with attachments, some high priority, a few
cancelled) and injects faults into the AWS calls the handlers make, through botocore event hooks
on the clients they share (:func:`mailqueue.aws.client`):

- the SQS publish fails (at enqueue, and when the requeue function publishes again), or SQS takes it
  and answers 500; SQS delivers a message twice;
- DynamoDB throttles a write: one attempt (botocore retries it) or every attempt (the call fails);
  or the write lands and its answer is lost (a read timeout, a reset connection), once or at every
  attempt;
- SES throttles, answers 5xx, pauses the account, finds the identity unverified, rejects the email,
  or times out, either before the request reached it (nothing sent) or after it accepted the email
  (the outcome is unknown);
- the sender dies after SES accepted an email, before it recorded ``sent`` (SES's event settles it,
  or, if that is lost, its claim expires and it is sent again);
- two requeue runs overlap, beside the scheduled one; cancels come at random moments.

SES's events come back as they would through EventBridge: late, some lost, some twice, a Delivery
before its Send, a failed invocation retried twice. Once no email is live, failed emails are retried
by request and the run waits again. Then it counts, per email id, what SES accepted (moto's own
record of sent messages, in order; the hooks tell which answers never reached the sender) against
what the table says. It fails if an email is lost, stuck, failed for a reason other than a permanent
SES error or exhausted attempts, cancelled yet sent, or sent twice outside the window: a repeat is
inside it only when the send before it went unrecorded (an unknown outcome, the sender dying after
SES accepted, the ``sent`` write failing) **and** no event proving SES's acceptance had been handled
by the events function before the repeat was claimed (:mod:`mailqueue_dev.chaos.count`).

The package: :mod:`~mailqueue_dev.chaos.plan` (what to send, how often each fault strikes),
:mod:`~mailqueue_dev.chaos.faults` (the hooks), :mod:`~mailqueue_dev.chaos.event_bus` (SES's events),
:mod:`~mailqueue_dev.chaos.ledger` (what happened), :mod:`~mailqueue_dev.chaos.count`,
:mod:`~mailqueue_dev.chaos.report` and :mod:`~mailqueue_dev.chaos.runner` (one run).

Every timing is shortened (see :class:`Timings`) so that the run drains in seconds. The faults of
each email's SES calls are drawn from the seed, the email's index and the attempt, so they are the
same in every run; the other faults are drawn from the seed in the order the calls happen, which
the threads decide.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import warnings
from pathlib import Path

from mailqueue_dev.chaos.count import Count
from mailqueue_dev.chaos.event_bus import EventBus, ses_event
from mailqueue_dev.chaos.faults import Injector, OverlappingRequeues, SenderDied, failed_call
from mailqueue_dev.chaos.ledger import Acceptance, Ledger
from mailqueue_dev.chaos.plan import ChaosConfig, EmailPlan, Faults, Timings, enqueue_units, plan_emails, ses_fault
from mailqueue_dev.chaos.report import ChaosReport, update_doc
from mailqueue_dev.chaos.runner import ChaosRun, run

__all__ = [
    "Acceptance",
    "ChaosConfig",
    "ChaosReport",
    "ChaosRun",
    "Count",
    "EmailPlan",
    "EventBus",
    "Faults",
    "Injector",
    "Ledger",
    "OverlappingRequeues",
    "SenderDied",
    "Timings",
    "enqueue_units",
    "failed_call",
    "main",
    "plan_emails",
    "run",
    "ses_event",
    "ses_fault",
    "update_doc",
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mailqueue_dev.chaos", description=__doc__.split("\n\n")[0])
    parser.add_argument("--emails", type=int, default=ChaosConfig.emails, help="how many emails (default 2000)")
    parser.add_argument("--seed", type=int, default=ChaosConfig.seed, help="the seed of every fault")
    parser.add_argument("--json", type=Path, help="also write the report as JSON to this file")
    parser.add_argument("--doc", type=Path, help="write the figures into this Markdown file's chaos block")
    parser.add_argument("--workdir", type=Path, help="keep the outbox and metrics here")
    parser.add_argument("--log-level", default="CRITICAL", help="the functions' log level (default CRITICAL)")
    parser.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="NAME=RATE",
        help="change how often a fault strikes (a field of Faults), e.g. enqueue_answer_lost=0; repeatable",
    )
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", message="No application metrics to publish")
    names = {item.name for item in dataclasses.fields(Faults)}
    changed: dict[str, float] = {}
    for option in args.fault:
        name, _, rate = option.partition("=")
        if name not in names or not rate:
            parser.error(f"--fault {option}: expected NAME=RATE, NAME one of {', '.join(sorted(names))}")
        changed[name] = float(rate)
    faults = dataclasses.replace(Faults(), **changed)
    config = ChaosConfig(emails=args.emails, seed=args.seed, log_level=args.log_level.upper(), faults=faults)
    print(f"chaos run: {config.emails} emails, seed {config.seed}; faults on every AWS call…", flush=True)
    # Progress goes to stderr: the local stack sends stdout to its metrics file during each invocation.
    report = run(config, args.workdir, progress=lambda line: print(f"  {line}", file=sys.stderr, flush=True))
    print("\n".join(report.lines()), flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report.as_dict(), indent=2) + "\n", encoding="utf-8")
    if args.doc and report.ok:
        update_doc(args.doc, report, changed)
        print(f"figures written to {args.doc}", flush=True)
    return 0 if report.ok else 1
