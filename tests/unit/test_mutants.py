"""The mutants of ``make mutants`` keep in step with the code, and their verdicts name the right test."""

from __future__ import annotations

import pytest
from mailqueue_dev.mutants import MUTANTS, REPOSITORY, Mutant, MutantOutOfStep, failed_tests, mutated


@pytest.mark.parametrize("mutant", MUTANTS, ids=[mutant.name for mutant in MUTANTS])
def test_every_mutant_applies_to_the_code_as_it_is(mutant: Mutant) -> None:
    # A change to the guarantee code that moves a mutant's text must move the mutant too.
    changed = mutated(REPOSITORY, mutant)

    assert changed
    for path, text in changed.items():
        assert text != path.read_text(encoding="utf-8")


def test_a_mutant_whose_text_is_gone_is_an_error() -> None:
    stale = Mutant("stale", "nothing", "layers/shared/mailqueue/statemachine.py", (("no such text", "x"),), ())

    with pytest.raises(MutantOutOfStep):
        mutated(REPOSITORY, stale)


def test_the_failed_test_is_read_whole_even_when_its_parameters_hold_spaces() -> None:
    output = "\n".join(
        [
            "FAILED tests/unit/test_sender.py::test_held[Paused-Sending is paused for this account.] - assert 1 == 0",
            "FAILED tests/unit/test_requeue.py::test_a_cancel - AssertionError",
            "ERROR tests/unit/test_broken.py - ImportError: nothing",
        ]
    )

    assert failed_tests(output) == [
        "tests/unit/test_sender.py::test_held[Paused-Sending is paused for this account.]",
        "tests/unit/test_requeue.py::test_a_cancel",
        "tests/unit/test_broken.py",
    ]
