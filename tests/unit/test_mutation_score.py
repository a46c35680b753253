"""The mutation score tool's sample and its interval: what a sampled score claims about a module."""

from __future__ import annotations

import pytest
from mailqueue_dev.mutation_score import Score, draw_sample, wilson_interval


def test_a_sample_is_the_same_for_the_same_seed_and_a_subset_of_the_mutants() -> None:
    names = [f"mailqueue.store.x_put__mutmut_{n}" for n in range(1, 301)]
    first = draw_sample(names, 60, seed=2026)
    assert first == draw_sample(list(reversed(names)), 60, seed=2026)
    assert len(set(first)) == 60
    assert set(first) <= set(names)
    assert first != draw_sample(names, 60, seed=2027)
    assert sorted(draw_sample(names[:10], 60, seed=2026)) == sorted(names[:10])


def test_the_interval_holds_the_sample_rate_and_narrows_as_the_sample_grows() -> None:
    low, high = wilson_interval(54, 60)
    assert low < 54 / 60 < high
    assert (round(low, 3), round(high, 3)) == (0.799, 0.953)
    wide = wilson_interval(9, 10)
    assert wide[1] - wide[0] > high - low
    assert wilson_interval(60, 60)[1] == pytest.approx(1.0)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_a_sampled_score_says_it_is_a_sample_and_how_far_it_speaks_for_the_module() -> None:
    score = Score("store", killed=54, total=60, survived=6, timeout=0, no_tests=0, not_checked=0, seconds=1.0)
    assert "a sample" not in score.line()
    sampled = Score(
        "store", killed=54, total=60, survived=6, timeout=0, no_tests=0, not_checked=0, seconds=1.0, population=412
    )
    assert "a sample of 60 of its 412 mutants: 54/60 killed" in sampled.line()
    assert "80%–95%" in sampled.line()
