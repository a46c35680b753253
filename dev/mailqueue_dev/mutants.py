"""Deliberate defects in the guarantee code, one at a time: the proofs must fail on each.

``python -m mailqueue_dev.mutants`` (what ``make mutants`` runs) copies the repository to a
temporary folder for each mutant, applies the mutant's exact-string replacements to the copy (the
working tree is never touched), and runs the tests that should catch the defect, fastest first,
stopping at the first failure. A mutant the tests survive is a proof that cannot fail: the run
fails. A replacement whose text is not found exactly once in its file is an error too: the list
must keep in step with the code, never pass silently.

``--doc docs/reliability.md`` writes the table of mutants, the test that killed each and the time
it took between the ``mutants`` markers of the page.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[2]
DOC_BEGIN = "<!-- mutants:begin -->"
DOC_END = "<!-- mutants:end -->"
# What a copy of the repository leaves out: environments, caches, build output.
IGNORED = (".git", ".venv", ".venv-tools", ".aws-sam", ".mailqueue", ".mypy_cache", ".ruff_cache", ".pytest_cache")
IGNORED_PATTERNS = ("__pycache__", ".hypothesis", "*.egg-info")

SHARED = "layers/shared/mailqueue"
CHAOS = "tests/reliability/test_chaos.py::test_nothing_is_lost_or_sent_twice_outside_the_windows_under_faults"
PROPERTY = "tests/unit/test_state_machine_property.py::test_every_sequence_of_events_keeps_the_state_machine_rules"


@dataclass(frozen=True)
class Mutant:
    name: str
    defect: str  # what the defect would do, in words
    path: str
    replacements: tuple[tuple[str, str], ...]  # (exact text, its replacement) in ``path``
    tests: tuple[str, ...]  # pytest node ids or files, fastest first
    # Replacements in other files: (file, exact text, its replacement).
    elsewhere: tuple[tuple[str, str, str], ...] = ()

    def edits(self) -> list[tuple[str, str, str]]:
        return [(self.path, old, new) for old, new in self.replacements] + list(self.elsewhere)


MUTANTS: tuple[Mutant, ...] = (
    Mutant(
        "settlement-off-chaos",
        "SES's events never settle an attempt whose answer was lost (seen by the chaos run alone)",
        f"{SHARED}/ses_events.py",
        (
            ('"Send": (frozenset({Status.RETRYING}), Status.SENT)', '"Send": (frozenset(), Status.SENT)'),
            ("_SETTLED_BY_PROOF = frozenset({Status.SENDING,", "_SETTLED_BY_PROOF = frozenset() and frozenset({"),
        ),
        (CHAOS,),
    ),
    Mutant(
        "settlement-off-property",
        "SES's events never settle an attempt whose answer was lost (seen by the property test alone)",
        f"{SHARED}/ses_events.py",
        (
            ('"Send": (frozenset({Status.RETRYING}), Status.SENT)', '"Send": (frozenset(), Status.SENT)'),
            ("_SETTLED_BY_PROOF = frozenset({Status.SENDING,", "_SETTLED_BY_PROOF = frozenset() and frozenset({"),
        ),
        (PROPERTY,),
    ),
    Mutant(
        "settlement-off",
        "SES's events never settle an attempt whose answer was lost",
        f"{SHARED}/ses_events.py",
        (
            ('"Send": (frozenset({Status.RETRYING}), Status.SENT)', '"Send": (frozenset(), Status.SENT)'),
            ("_SETTLED_BY_PROOF = frozenset({Status.SENDING,", "_SETTLED_BY_PROOF = frozenset() and frozenset({"),
        ),
        ("tests/unit/test_ses_events.py",),
    ),
    Mutant(
        "outcome-without-claim-token",
        "the sender writes its outcome without its claim token: a sender whose claim expired overwrites a newer one",
        f"{SHARED}/sender.py",
        (
            (
                "transition(self.store, email_id, Guard(statuses={Status.SENDING}, claim_token=token), change, now)",
                "transition(self.store, email_id, Guard(statuses={Status.SENDING}), change, now)",
            ),
        ),
        (
            "tests/unit/test_sender.py::test_a_sender_whose_claim_was_taken_over_cannot_write_its_outcome",
            PROPERTY,
        ),
    ),
    Mutant(
        "claim-is-anyone-s",
        "a claim that loses to another sender is taken as its own: a duplicate delivery sends twice",
        f"{SHARED}/sender.py",
        (
            (
                "current.status is Status.SENDING and current.claim_token == token",
                "current.status is Status.SENDING",
            ),
        ),
        (
            "tests/unit/test_sender.py::test_an_email_sending_under_a_live_claim_is_left_alone",
            PROPERTY,
            CHAOS,
        ),
    ),
    Mutant(
        "claim-ignores-attempts",
        "the claim does not check the attempts left: an email is sent beyond max_attempts",
        f"{SHARED}/sender.py",
        (
            (
                "guard = Guard(statuses={Status.QUEUED}, attempts_below=self.settings.max_attempts)",
                "guard = Guard(statuses={Status.QUEUED})",
            ),
        ),
        (
            "tests/unit/test_sender.py::test_a_queued_email_with_no_attempts_left_is_failed_unsent",
            PROPERTY,
            CHAOS,
        ),
    ),
    Mutant(
        "throttle-spends-an-attempt",
        "a throttle spends an attempt: a slow SES fails emails",
        f"{SHARED}/sender.py",
        (
            (
                "return Decision(Result.RETRYING, reason, delay, attempt_counted=False)",
                "return Decision(Result.RETRYING, reason, delay)",
            ),
        ),
        (
            "tests/unit/test_sender.py::test_a_throttle_is_retried_with_backoff_without_spending_an_attempt",
            PROPERTY,
            CHAOS,
        ),
    ),
    Mutant(
        "throttle-released-at-once",
        "a throttle releases the claim at once instead of trying again under it: a write per throttle, a backoff",
        f"{SHARED}/sender.py",
        (("THROTTLE_RETRIES = 4\n", "THROTTLE_RETRIES = 0\n"),),
        (
            "tests/unit/test_sender.py::test_a_throttled_send_is_tried_again_under_its_claim_and_costs_no_write",
            CHAOS,
        ),
    ),
    Mutant(
        "throttle-keeps-the-pace",
        "a throttle does not slow the container: it goes on calling SES at the pace SES just refused",
        f"{SHARED}/sender.py",
        (
            (
                "self._pace = max(self.rate * FLOOR, self.pace(now) * DECREASE)",
                "self._pace = max(self.rate * FLOOR, self.pace(now))",
            ),
        ),
        (
            "tests/unit/test_sender.py::test_a_throttle_halves_the_pace_which_grows_back_by_a_tenth_of_the_share_a_second",
        ),
    ),
    Mutant(
        "normal-mail-does-not-yield",
        "normal-priority mail is sent while the high-priority queue has mail: high priority does not go first",
        f"{SHARED}/sender.py",
        (('        if priority != "high":\n            self._yield_to_high_priority(time_left)\n', ""),),
        (
            "tests/unit/test_sender.py::test_normal_priority_mail_waits_unclaimed_while_the_high_priority_queue_has_mail",
        ),
    ),
    Mutant(
        "send-rate-split-between-queues",
        "each queue's invocations get half the send rate: normal-priority mail alone is sent at half the rate",
        f"{SHARED}/sender.py",
        (
            (
                "return settings.send_rate / settings.sender_concurrency\n",
                "return settings.send_rate / (settings.sender_concurrency * 2)\n",
            ),
        ),
        ("tests/unit/test_sender.py::test_the_invocations_of_one_queue_share_the_whole_send_rate",),
    ),
    Mutant(
        "unknown-outcome-wait-skipped",
        "after an unknown outcome the email is sent again at once, without waiting for SES's Send event",
        f"{SHARED}/sender.py",
        (
            (
                "float(settings.unknown_outcome_seconds))",
                "float(settings.unknown_outcome_seconds * 0))",
            ),
        ),
        (
            "tests/unit/test_sender.py::test_a_read_timeout_waits_for_the_send_event",
            PROPERTY,
            CHAOS,
        ),
    ),
    Mutant(
        "account-error-spends-an-attempt",
        "an account or configuration error spends the email's attempt: an operator's fix finds it failed",
        f"{SHARED}/sender.py",
        (
            (
                "float(settings.account_error_seconds), attempt_counted=False)",
                "float(settings.account_error_seconds))",
            ),
        ),
        (
            "tests/unit/test_sender.py::test_an_account_error_holds_the_email_without_spending_an_attempt",
            PROPERTY,
            CHAOS,
        ),
    ),
    Mutant(
        "requeue-publishes-before-its-write",
        "the requeue function publishes before its guarded write: a run that lost the race still hands out a message",
        f"{SHARED}/requeue.py",
        (
            (
                "        transition(self.store, email_id, guard, change, run.now)\n"
                "        run.requeued(reason, Publication(email_id, priority))\n",
                "        self.queue.publish([Publication(email_id, priority)])\n"
                "        transition(self.store, email_id, guard, change, run.now)\n"
                "        with run.lock:\n"
                "            run.summary.requeued[reason] += 1\n",
            ),
        ),
        ("tests/unit/test_requeue.py", PROPERTY, CHAOS),
    ),
    Mutant(
        "requeue-ignores-the-deadline-seen",
        "the requeue function's write is not guarded by the deadline it saw: two runs both act",
        f"{SHARED}/requeue.py",
        (
            (
                "        guard = Guard(statuses={status}, deadline=seen_deadline)\n",
                "        guard = Guard(statuses={status})\n",
            ),
            (
                "            guard = Guard(statuses={status}, deadline=seen_deadline, attempts_below=",
                "            guard = Guard(statuses={status}, attempts_below=",
            ),
        ),
        ("tests/unit/test_requeue.py", PROPERTY, CHAOS),
    ),
    Mutant(
        "held-again-and-again",
        "a queued email behind a backlog is held at every deadline: a message really lost is never published"
        " again while the send queue holds any mail",
        f"{SHARED}/requeue.py",
        (("            if ahead and not _held_since_published(current.history):\n", "            if ahead:\n"),),
        ("tests/unit/test_requeue.py",),
    ),
    Mutant(
        "held-and-published",
        "a queued email behind a backlog is held and published again as well: a duplicate behind the same backlog",
        f"{SHARED}/requeue.py",
        (
            (
                "                run.count_held()\n",
                "                run.count_held()\n"
                "                run.requeued(reason, Publication(email_id, priority))\n",
            ),
        ),
        ("tests/unit/test_requeue.py",),
    ),
    Mutant(
        "released-claim-keeps-its-token",
        "an expired claim is released without removing its token: the dead sender can still write an outcome",
        f"{SHARED}/requeue.py",
        (("remove=(Attr.CLAIM_TOKEN,) if status is Status.SENDING else (),", "remove=(),"),),
        ("tests/unit/test_requeue.py", PROPERTY, CHAOS),
    ),
    Mutant(
        "never-gives-up",
        "the requeue function never fails an email out of attempts: it stays live forever",
        f"{SHARED}/requeue.py",
        (
            (
                "gives_up = status in {Status.SENDING, Status.RETRYING} and item.attempts"
                " >= self.settings.max_attempts",
                "gives_up = False",
            ),
        ),
        ("tests/unit/test_requeue.py", PROPERTY, CHAOS),
    ),
    Mutant(
        "cancel-guard-dropped",
        "a cancel is not guarded by the status: it cancels an email that is sending or sent",
        f"{SHARED}/service.py",
        (
            (
                "guard = Guard(statuses={Status.SCHEDULED, Status.QUEUED, Status.RETRYING})",
                "guard = Guard(statuses=set(Status) - {Status.CANCELLED})",
            ),
        ),
        (
            PROPERTY,
            "tests/unit/test_api.py",
            CHAOS,
        ),
        elsewhere=(
            (
                f"{SHARED}/statemachine.py",
                "def is_allowed(source: Status, target: Status) -> bool:\n    return target in ALLOWED[source]\n",
                "def is_allowed(source: Status, target: Status) -> bool:\n"
                "    return target in ALLOWED[source] or target is Status.CANCELLED\n",
            ),
        ),
    ),
    Mutant(
        "suppression-check-skipped",
        "enqueue never looks up the suppression list: mail goes to addresses that bounced or complained",
        f"{SHARED}/service.py",
        (
            (
                "        return self.suppressions.find(addresses) if addresses else {}\n",
                "        return {}\n",
            ),
        ),
        ("tests/unit/test_ses_events.py", "tests/unit/test_api.py"),
    ),
    Mutant(
        "idempotent-replay-off",
        "an Idempotency-Key is ignored: a client's retry stores a second email",
        "functions/api/api.py",
        (
            (
                "    if idempotency_key:\n        answer = _once(lambda idempotent: idempotent.enqueue,",
                "    if False:\n        answer = _once(lambda idempotent: idempotent.enqueue,",
            ),
        ),
        ("tests/unit/test_api.py",),
    ),
    Mutant(
        "any-status-may-move",
        "a transition is not guarded by the current status: racing actors both win",
        f"{SHARED}/store.py",
        (
            (
                "        conditions = [f\"{update.name(Attr.STATUS)} IN ({', '.join(statuses)})\"]\n",
                '        conditions = [f"attribute_exists({update.name(Attr.STATUS)})"]\n',
            ),
        ),
        ("tests/unit/test_statemachine.py", "tests/unit/test_sender.py", PROPERTY),
    ),
    Mutant(
        "terminal-keeps-its-deadline",
        "a terminal email keeps its deadline and stays in by-deadline: the requeue function finds it again",
        f"{SHARED}/store.py",
        (("            update.remove(Attr.DEADLINE)\n            update.remove(Attr.SHARD)\n", ""),),
        ("tests/unit/test_statemachine.py", PROPERTY, CHAOS),
    ),
    Mutant(
        "no-sweep",
        "the requeue function reads only by-deadline: an email on its normal path whose message is lost, or whose"
        " sender died, stays live forever",
        f"{SHARED}/requeue.py",
        (("lambda item: self._act_swept(run, item)", "lambda item: None"),),
        ("tests/unit/test_sweep.py", CHAOS),
    ),
    Mutant(
        "shard-in-no-group",
        "the requeue function's groups cover only as many shards as there are groups: with DEADLINE_SHARDS raised,"
        " the due emails of the other shards are never released",
        f"{SHARED}/shardgroups.py",
        (
            (
                "shards = [shard for shard in range(total) if shard % self.count == self.index]",
                "shards = [self.index] if self.index < total else []",
            ),
        ),
        ("tests/unit/test_shard_groups.py", "tests/unit/test_template.py"),
    ),
    Mutant(
        "late-claim-left-to-the-sweep",
        "an email whose deadline lies past its horizon stays out of by-deadline: the sweep, having passed it, never"
        " comes back",
        f"{SHARED}/store.py",
        (("return status in TIMED or deadline > self.horizon(email_id)", "return status in TIMED"),),
        ("tests/unit/test_sweep.py", CHAOS),
    ),
    Mutant(
        "sweep-acts-before-the-deadline",
        "the sweep acts on a live email whose deadline has not passed: a sender still at work loses its claim and"
        " the email goes out twice",
        f"{SHARED}/sweeping.py",
        (("            if record.deadline <= now:\n", "            if True:\n"),),
        ("tests/unit/test_sweep.py",),
    ),
    Mutant(
        "ses-client-retries",
        "botocore resends an email by itself after a timeout: one email goes out twice",
        f"{SHARED}/aws.py",
        (
            (
                'config = Config(retries={"total_max_attempts": 1, "mode": "standard"}',
                'config = Config(retries={"total_max_attempts": 3, "mode": "standard"}',
            ),
        ),
        (
            "tests/unit/test_sender.py::test_a_read_timeout_waits_for_the_send_event",
            "tests/unit/test_sender.py::test_a_refused_connection_sent_nothing_and_is_retried",
            CHAOS,
        ),
    ),
)


@dataclass
class Outcome:
    mutant: Mutant
    killed: bool
    killer: str
    seconds: float
    output: str = ""
    # The test that failed fails without the mutant too: no verdict either way.
    no_verdict: bool = False

    @property
    def verdict(self) -> str:
        if self.killed:
            return f"killed by {self.killer}"
        return f"NO VERDICT: {self.killer} fails without the mutant too" if self.no_verdict else "SURVIVED"


class MutantOutOfStep(Exception):
    """A mutant's text is not found exactly once in its file: the list must follow the code."""


def mutated(root: Path, mutant: Mutant) -> dict[Path, str]:
    """The files ``mutant`` changes under ``root``, with their mutated text."""
    texts: dict[Path, str] = {}
    for name, old, new in mutant.edits():
        path = root / name
        text = texts.get(path, path.read_text(encoding="utf-8"))
        found = text.count(old)
        if found != 1:
            raise MutantOutOfStep(f"{mutant.name}: {old!r} is in {name} {found} times, not once")
        texts[path] = text.replace(old, new)
    return texts


def mutate(tree: Path, mutant: Mutant) -> None:
    """Apply ``mutant`` to the copy of the repository at ``tree``."""
    for path, text in mutated(tree, mutant).items():
        path.write_text(text, encoding="utf-8")


def check_all(root: Path = REPOSITORY) -> None:
    """Every mutant applies to the tree at ``root`` (without changing it)."""
    for mutant in MUTANTS:
        mutated(root, mutant)


def copy_tree(destination: Path, root: Path = REPOSITORY) -> Path:
    tree = destination / "tree"
    shutil.copytree(root, tree, ignore=shutil.ignore_patterns(*IGNORED, *IGNORED_PATTERNS), symlinks=True)
    return tree


def _pytest(python: str, tree: Path, tests: tuple[str, ...] | list[str]) -> subprocess.CompletedProcess[str]:
    """Run ``tests`` in the copy at ``tree``, stopping at the first failure."""
    environment = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    # The copy's code must shadow the editable install of the working tree.
    paths = ["layers/shared", "dev", *(f"functions/{name}" for name in ("api", "sender", "requeue", "events"))]
    environment["PYTHONPATH"] = os.pathsep.join(str(tree / path) for path in paths)
    return subprocess.run(  # noqa: S603 - the project's own interpreter and tests
        [python, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-rf", *tests],
        cwd=tree,
        env=environment,
        capture_output=True,
        text=True,
        check=False,
    )


def failed_tests(output: str) -> list[str]:
    """The node ids of pytest's ``-rf`` summary lines: ``FAILED <id> - <message>``, where a parametrized id
    may hold spaces of its own."""
    return re.findall(r"^(?:FAILED|ERROR) (.+?\.py(?:::[^\[\s]+(?:\[.*?\])?)?)(?: - .*)?$", output, re.MULTILINE)


def run_mutant(mutant: Mutant, python: str, root: Path = REPOSITORY) -> Outcome:
    """Run the mutant's tests against a mutated copy; killed when one fails that passes without the mutant.

    The test that failed is run again on an unmutated copy: a test that fails there too (a slow
    machine, a defect of the code itself) proves nothing about the mutant, and kills nothing.
    """
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"mailqueue-mutant-{mutant.name}-") as folder:
        tree = copy_tree(Path(folder), root)
        mutate(tree, mutant)
        answer = _pytest(python, tree, mutant.tests)
        output = answer.stdout + answer.stderr
        failed = failed_tests(output)
        # pytest exits 1 when a test failed; anything else (no tests, an error of its own) kills nothing.
        killed = answer.returncode == 1 and bool(failed)
        no_verdict = False
        if killed:
            control = copy_tree(Path(folder) / "control", root)
            check = _pytest(python, control, [failed[0]])
            if check.returncode != 0:
                killed, no_verdict = False, True
                output += f"\n--- {failed[0]} fails without the mutant too: no verdict ---\n"
                output += check.stdout + check.stderr
    seconds = time.monotonic() - started
    return Outcome(mutant, killed, failed[0] if failed else "", seconds, output, no_verdict)


def table(outcomes: list[Outcome]) -> str:
    rows = ["| mutant | the defect | killed by | seconds |", "|---|---|---|---|"]
    for outcome in outcomes:
        killer = f"`{outcome.killer}`" if outcome.killed else f"**{outcome.verdict}**"
        rows.append(f"| `{outcome.mutant.name}` | {outcome.mutant.defect} | {killer} | {outcome.seconds:.0f} |")
    return "\n".join(rows)


def update_doc(path: Path, outcomes: list[Outcome], seconds: float) -> None:
    text = path.read_text(encoding="utf-8")
    if DOC_BEGIN not in text or DOC_END not in text:
        raise ValueError(f"{path} has no {DOC_BEGIN} … {DOC_END} block")
    head, rest = text.split(DOC_BEGIN, 1)
    _, tail = rest.split(DOC_END, 1)
    killed = sum(1 for outcome in outcomes if outcome.killed)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d")
    block = (
        f"{DOC_BEGIN}\nLast `make mutants` run: {stamp}, {killed} of {len(outcomes)} mutants killed, "
        f"{seconds / 60:.0f} minutes in all.\n\n{table(outcomes)}\n{DOC_END}"
    )
    path.write_text(head + block + tail, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mailqueue_dev.mutants", description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="run only these mutants (default: all)")
    parser.add_argument("--list", action="store_true", help="list the mutants and check that each applies")
    parser.add_argument("--doc", type=Path, help="write the results into this Markdown file's mutants block")
    parser.add_argument("--python", default=sys.executable, help="the interpreter with the project's dependencies")
    parser.add_argument("--jobs", type=int, default=1, help="mutants run at once (default 1)")
    parser.add_argument(
        "--logs", type=Path, default=REPOSITORY / ".mailqueue" / "mutants", help="each mutant's test output goes here"
    )
    args = parser.parse_args(argv)
    check_all()
    chosen = [mutant for mutant in MUTANTS if not args.names or mutant.name in args.names]
    unknown = set(args.names) - {mutant.name for mutant in MUTANTS}
    if unknown:
        parser.error(f"no such mutant: {', '.join(sorted(unknown))}")
    if args.list:
        for mutant in chosen:
            print(f"{mutant.name:<36} {mutant.path}: {mutant.defect}")
        return 0
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        running = [pool.submit(run_mutant, mutant, args.python) for mutant in chosen]
        outcomes = []
        for future in running:
            outcome = future.result()
            args.logs.mkdir(parents=True, exist_ok=True)
            (args.logs / f"{outcome.mutant.name}.log").write_text(outcome.output, encoding="utf-8")
            print(f"{outcome.mutant.name:<36} {outcome.verdict} ({outcome.seconds:.0f} s)", flush=True)
            if not outcome.killed:
                print("\n".join(outcome.output.splitlines()[-15:]), flush=True)
            else:
                # Why it died: the first lines of the failure that say so.
                reasons = [line for line in outcome.output.splitlines() if re.match(r"^E\s+\S|^\s+problem:", line)]
                print("\n".join(f"    {line.strip()[:200]}" for line in reasons[:3]), flush=True)
            outcomes.append(outcome)
    seconds = time.monotonic() - started
    survivors = [outcome.mutant.name for outcome in outcomes if not outcome.killed]
    print(f"{len(outcomes) - len(survivors)} of {len(outcomes)} mutants killed in {seconds:.0f} s", flush=True)
    if args.doc and not args.names:
        update_doc(args.doc, outcomes, seconds)
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
