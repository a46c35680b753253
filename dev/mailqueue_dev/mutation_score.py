"""A mutation tool's score for the guarantee modules, one module at a time.

``python -m mailqueue_dev.mutation_score`` (what ``make mutation-score`` runs) runs mutmut over
each module of ``MODULES`` in turn, with the fast unit tests that exercise that module, and prints
the module's score: killed / total, survived, timeouts and the mutants no selected test reaches.

mutmut derives a mutant's module name from its file's path (``src/`` stripped) and the tests must
import the mutated copy under that same name. The package lives in ``layers/shared/mailqueue`` and
is imported as ``mailqueue``, so each module runs in a staging folder,
``.mailqueue/mutation/<module>``, where ``src`` links to ``layers/shared`` and ``tests``, ``dev``,
``events``, ``functions`` and ``template.yaml`` link to the repository's, with a ``pyproject.toml``
built from the repository's ``[tool.mutmut]`` and ``[tool.pytest.ini_options]`` tables plus the
module and its tests. mutmut copies all of it to ``mutants/`` inside that folder; the working tree
is never touched. Its survivors stay there: ``cd .mailqueue/mutation/<module> && mutmut results`` lists them and
``mutmut show <name>`` shows one.

``--until HH:MM`` (UTC) starts no module after that time; ``--stop-at HH:MM`` stops the running one
then, keeping the verdicts it has (the rest are counted as not run); ``--max-children N`` is
mutmut's number of workers (default 1: the machine is shared).

``--sample N`` judges a random sample of N of a module's mutants (drawn with ``--seed``, so a run
can be repeated) instead of all of them: the score is then the sample's, with its 95% interval for
the whole module. ``--resume`` keeps a module's staging folder and verdicts and judges only the
mutants that have none yet (an earlier run was stopped).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[2]
STAGING = REPOSITORY / ".mailqueue" / "mutation"
LINKED = ("tests", "dev", "events", "functions", "template.yaml")


@dataclass(frozen=True)
class Module:
    name: str  # file name in layers/shared/mailqueue, without .py
    tests: tuple[str, ...]  # the fast, deterministic unit tests that exercise it


# Smallest and fastest first. The property test and the integration tests are left out: too slow
# to run once per mutant on a shared machine (``make mutants`` runs them on chosen mutants).
MODULES: tuple[Module, ...] = (
    Module("statemachine", ("tests/unit/test_statemachine.py",)),
    Module("ses_events", ("tests/unit/test_ses_events.py",)),
    Module("requeue", ("tests/unit/test_requeue.py",)),
    Module("sender", ("tests/unit/test_sender.py", "tests/unit/test_content_expiry.py")),
    Module(
        "store",
        (
            "tests/unit/test_statemachine.py",
            "tests/unit/test_sender.py",
            "tests/unit/test_requeue.py",
            "tests/unit/test_ses_events.py",
            "tests/unit/test_api.py",
            "tests/unit/test_enqueue_faults.py",
        ),
    ),
    Module(
        "service",
        ("tests/unit/test_api.py", "tests/unit/test_enqueue_faults.py", "tests/unit/test_templates_api.py"),
    ),
)


@dataclass(frozen=True)
class Score:
    module: str
    killed: int
    total: int
    survived: int
    timeout: int
    no_tests: int
    not_checked: int  # no verdict: the run was stopped first
    seconds: float
    survivors: tuple[str, ...] = ()
    timeouts: tuple[str, ...] = ()
    population: int | None = None  # the module's mutants, when ``total`` is a sample of them

    def line(self) -> str:
        judged = f"{self.killed}/{self.total} killed"
        if self.population is not None:
            low, high = wilson_interval(self.killed, self.total - self.not_checked)
            judged = (
                f"a sample of {self.total} of its {self.population} mutants: {judged} "
                f"(the module's score within {low:.0%}–{high:.0%}, 95%)"
            )
        return (
            f"{self.module}: {judged}, {self.survived} survived, "
            f"{self.timeout} timeouts, {self.no_tests} not reached by the tests, {self.not_checked} not run "
            f"({self.seconds:.0f} s)"
        )


def wilson_interval(successes: int, trials: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a proportion: where the module's kill rate lies, from a sample's."""
    if trials == 0:
        return 0.0, 1.0
    rate = successes / trials
    centre = (rate + z * z / (2 * trials)) / (1 + z * z / trials)
    spread = z * math.sqrt(rate * (1 - rate) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    return max(0.0, centre - spread), min(1.0, centre + spread)


def _toml_value(value: object) -> str:
    # Strings, numbers, booleans and lists of them: their JSON spelling is valid TOML.
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value)


def _table(name: str, values: dict[str, object]) -> str:
    return "\n".join([f"[{name}]", *(f"{key} = {_toml_value(value)}" for key, value in values.items())]) + "\n"


def stage(module: Module) -> Path:
    """The staging folder of ``module``, built afresh: earlier results are dropped."""
    tool = tomllib.loads((REPOSITORY / "pyproject.toml").read_text(encoding="utf-8"))["tool"]
    folder = STAGING / module.name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    (folder / "src").symlink_to(REPOSITORY / "layers" / "shared", target_is_directory=True)
    for name in LINKED:
        (folder / name).symlink_to(REPOSITORY / name, target_is_directory=(REPOSITORY / name).is_dir())
    mutmut = {
        **tool["mutmut"],
        "only_mutate": [f"src/mailqueue/{module.name}.py"],
        "pytest_add_cli_args_test_selection": list(module.tests),
    }
    pytest_options = dict(tool["pytest"]["ini_options"])
    # mutmut puts its mutated copy of src/ on sys.path; the original must not shadow it.
    pytest_options["pythonpath"] = [path for path in pytest_options["pythonpath"] if path != "layers/shared"]
    (folder / "pyproject.toml").write_text(
        _table("tool.mutmut", mutmut) + "\n" + _table("tool.pytest.ini_options", pytest_options), encoding="utf-8"
    )
    return folder


def _past(moment: str | None) -> bool:
    return moment is not None and datetime.now(UTC).strftime("%H:%M") >= moment


def _mutmut() -> str:
    return str(Path(sys.executable).with_name("mutmut"))


# Matches no mutant: ``mutmut run`` with it generates the mutants and records which tests reach each
# function, then stops, so that a sample can be drawn from the mutants' names.
_NO_MUTANT = "mailqueue.no_such_module.*"


def _verdicts(module: Module, folder: Path) -> dict[str, int | None]:
    """Each mutant of ``module`` with mutmut's exit code for it (None: not judged yet)."""
    meta = folder / "mutants" / "src" / "mailqueue" / f"{module.name}.py.meta"
    codes: dict[str, int | None] = json.loads(meta.read_text(encoding="utf-8"))["exit_code_by_key"]
    return codes


def draw_sample(names: list[str], size: int, seed: int) -> list[str]:
    """``size`` of ``names``, the same ones for the same seed and mutants."""
    return sorted(random.Random(seed).sample(sorted(names), min(size, len(names))))


def run(
    module: Module,
    max_children: int,
    stop_at: str | None = None,
    sample: int | None = None,
    seed: int = 0,
    resume: bool = False,
) -> Score:
    folder = STAGING / module.name
    if not (resume and (folder / "mutants").is_dir()):
        folder = stage(module)
    started = time.monotonic()
    names: list[str] = []
    if sample is not None:
        # The project's own mutmut, in its own staging folder; it exits non-zero: nothing matched.
        subprocess.run([_mutmut(), "run", _NO_MUTANT], check=False, cwd=folder, capture_output=True)  # noqa: S603
        names = draw_sample(list(_verdicts(module, folder)), sample, seed)
        if resume:
            names = [name for name in names if _verdicts(module, folder)[name] is None]
    if sample is None or names:
        command = [_mutmut(), "run", "--max-children", str(max_children), *names]
        process = subprocess.Popen(command, cwd=folder)  # noqa: S603
        while process.poll() is None:
            if _past(stop_at):
                # mutmut stops its workers and keeps the verdicts it has; the rest stay "not checked".
                process.send_signal(signal.SIGINT)
                process.wait()
                break
            time.sleep(5)
        else:
            if process.returncode != 0:
                # Its clean run or its recording of the tests failed: no verdict would mean anything.
                raise RuntimeError(f"mutmut failed on {module.name} (exit {process.returncode}): see its output above")
    chosen = draw_sample(list(_verdicts(module, folder)), sample, seed) if sample is not None else None
    return score(module, folder, time.monotonic() - started, chosen)


def score(module: Module, folder: Path, seconds: float, sample: list[str] | None = None) -> Score:
    """The score of the mutmut run in ``folder``, finished or stopped; of ``sample`` only, if given."""
    if sample is not None:
        return _sample_score(module, folder, seconds, sample)
    mutmut = _mutmut()
    subprocess.run([mutmut, "export-cicd-stats"], cwd=folder, check=True, capture_output=True)  # noqa: S603
    stats = json.loads((folder / "mutants" / "mutmut-cicd-stats.json").read_text(encoding="utf-8"))
    results = subprocess.run(  # noqa: S603
        [mutmut, "results"], cwd=folder, check=True, capture_output=True, text=True
    ).stdout
    survivors = tuple(line.strip().split(":")[0] for line in results.splitlines() if line.endswith(": survived"))
    timeouts = tuple(line.strip().split(":")[0] for line in results.splitlines() if line.endswith(": timeout"))
    verdicts = ("killed", "survived", "timeout", "no_tests", "suspicious", "segfault", "skipped")
    return Score(
        module.name,
        killed=stats["killed"],
        total=stats["total"],
        survived=stats["survived"],
        timeout=stats["timeout"],
        no_tests=stats["no_tests"],
        not_checked=stats["total"] - sum(stats[verdict] for verdict in verdicts),
        seconds=seconds,
        survivors=survivors,
        timeouts=timeouts,
    )


def _sample_score(module: Module, folder: Path, seconds: float, sample: list[str]) -> Score:
    from mutmut.stats import status_by_exit_code  # noqa: PLC0415  (mutmut's own reading of its exit codes)

    verdicts = _verdicts(module, folder)
    status = {name: status_by_exit_code[verdicts[name]] for name in sample}

    def named(verdict: str) -> tuple[str, ...]:
        return tuple(name for name, seen in status.items() if seen == verdict)

    return Score(
        module.name,
        killed=len(named("killed")),
        total=len(sample),
        survived=len(named("survived")),
        timeout=len(named("timeout")),
        no_tests=len(named("no tests")),
        not_checked=len(named("not checked")),
        seconds=seconds,
        survivors=named("survived"),
        timeouts=named("timeout"),
        population=len(verdicts),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mailqueue_dev.mutation_score", description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", help="modules to run (default: all, in order)")
    parser.add_argument("--until", help="HH:MM, UTC: start no module after this time")
    parser.add_argument("--stop-at", help="HH:MM, UTC: stop the running module then, keeping its verdicts so far")
    parser.add_argument("--max-children", type=int, default=1)
    parser.add_argument("--sample", type=int, help="judge a random sample of this many mutants per module")
    parser.add_argument("--seed", type=int, default=2026, help="the sample's seed (default 2026)")
    parser.add_argument("--resume", action="store_true", help="keep earlier verdicts; judge the rest")
    args = parser.parse_args(argv)
    known = {module.name: module for module in MODULES}
    unknown = [name for name in args.modules if name not in known]
    if unknown:
        parser.error(f"unknown modules: {', '.join(unknown)} (known: {', '.join(known)})")
    chosen = [module for module in MODULES if not args.modules or module.name in args.modules]
    scores: list[Score] = []
    for module in chosen:
        now = datetime.now(UTC)
        if _past(args.until) or _past(args.stop_at):
            print(f"{now:%H:%M} UTC is past --until or --stop-at: {module.name} and later modules not started")
            break
        result = run(module, args.max_children, args.stop_at, args.sample, args.seed, args.resume)
        scores.append(result)
        print(result.line(), flush=True)
        for survivor in result.survivors:
            print(f"  survived: {survivor}")
        for timeout in result.timeouts:
            print(f"  timeout: {timeout}")
    print(f"\nmutmut scores, {datetime.now(UTC):%Y-%m-%d}:")
    for result in scores:
        print("  " + result.line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
