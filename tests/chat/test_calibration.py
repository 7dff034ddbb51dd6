"""The threshold search against Clopper–Pearson bounds computed by hand (closed forms, no scipy)."""

from __future__ import annotations

import math

import pytest

from chat.calibration import (
    Observation,
    answer_threshold_search,
    auroc,
    clopper_pearson_lower,
    decisions_report,
    fewest_to_certify,
    suggest_threshold_choose,
)


def _beta_a2_cdf(x: float, a: int) -> float:
    """CDF of Beta(a, 2): (a+1)·x^a − a·x^(a+1)."""
    return (a + 1) * x**a - a * x ** (a + 1)


def _lower_one_miss(trials: int, confidence: float) -> float:
    """Lower bound for trials−1 successes of ``trials``: the x with Beta(trials−1, 2) CDF = 1−confidence,
    by bisection."""
    low, high = 0.0, 1.0
    for _ in range(100):
        middle = (low + high) / 2
        if _beta_a2_cdf(middle, trials - 1) < 1 - confidence:
            low = middle
        else:
            high = middle
    return low


def test_lower_bound_matches_the_closed_forms() -> None:
    # All n right: the bound solves x^n = 1 − confidence.
    assert clopper_pearson_lower(successes=29, trials=29, confidence=0.95) == pytest.approx(0.05 ** (1 / 29), abs=1e-9)
    assert clopper_pearson_lower(successes=29, trials=29, confidence=0.95) == pytest.approx(0.90185, abs=1e-5)
    assert clopper_pearson_lower(successes=28, trials=28, confidence=0.95) == pytest.approx(0.89853, abs=1e-5)
    # One wrong of 50.
    assert clopper_pearson_lower(successes=49, trials=50, confidence=0.95) == pytest.approx(
        _lower_one_miss(50, 0.95), abs=1e-7)
    assert clopper_pearson_lower(successes=0, trials=10, confidence=0.95) == 0.0


def _observations(*groups: tuple[float, int, int]) -> list[Observation]:
    """(score, right, wrong) groups: that many answerable questions at that top score."""
    return [Observation(score=score, correct=right, answerable=True, shown=True)
            for score, n_right, n_wrong in groups for right in [True] * n_right + [False] * n_wrong]


def test_search_takes_the_most_permissive_cut_off_that_holds_and_stops_at_the_first_failure() -> None:
    """GIVEN 29 right answers at 0.95, one wrong at 0.85, 70 right at 0.5
    WHEN the grid is tested from 0.99 down at target 0.9
    THEN 0.95 … 0.86 pass (29/29: 0.90185 ≥ 0.9), 0.85 fails (29/30: hand bound below 0.9), and the search stops
    there, although 0.5 (99/100 right) would pass on its own: the fixed sequence never looks past a failure."""
    observations = _observations((0.95, 29, 0), (0.85, 0, 1), (0.5, 70, 0))
    assert _lower_one_miss(30, 0.95) < 0.9 <= _lower_one_miss(100, 0.95)
    assert clopper_pearson_lower(successes=29, trials=30, confidence=0.95) == pytest.approx(
        _lower_one_miss(30, 0.95), abs=1e-7)

    found = answer_threshold_search(observations, target=0.9, confidence=0.95)

    assert found.answer_threshold == 0.86  # the lowest cut-off still answering only the 29
    assert found.precision_bound == pytest.approx(0.05 ** (1 / 29), abs=1e-9)
    assert found.coverage == pytest.approx(29 / 100)
    assert found.tested == 11  # 0.99 … 0.96 answer nothing; 0.95 … 0.86 pass with the same 29; 0.85 fails


def test_cut_offs_answering_too_few_to_certify_are_passed_over_not_failed() -> None:
    """5 right at 0.99 cannot certify 0.9 (0.05^(1/5) = 0.549), whatever the labels; 29 could. Skipping the
    cut-offs that answer fewer than 29 keeps the sequence going to 0.9, where 35 of 35 are right."""
    observations = _observations((0.99, 5, 0), (0.9, 30, 0))
    assert fewest_to_certify(target=0.9, confidence=0.95) == 29
    assert fewest_to_certify(target=0.6, confidence=0.95) == 6

    found = answer_threshold_search(observations, target=0.9, confidence=0.95)

    assert (found.answer_threshold, found.tested) == (0.01, 90)  # 0.90 … 0.01 all answer the same 35
    assert found.precision_bound == pytest.approx(0.05 ** (1 / 35), abs=1e-9)
    assert clopper_pearson_lower(successes=99, trials=100, confidence=0.95) >= 0.9


def test_evidence_that_cannot_reach_the_target_certifies_nothing_and_says_how_many_labels() -> None:
    observations = _observations((0.9, 28, 0))  # 28/28: 0.89853 < 0.9

    found = answer_threshold_search(observations, target=0.9, confidence=0.95)

    assert (found.answer_threshold, found.precision_bound, found.coverage) == (None, None, 0.0)
    assert found.labels_needed is not None and found.labels_needed >= 1
    bad = answer_threshold_search(_observations((0.9, 8, 2)), target=0.9, confidence=0.95)
    assert bad.answer_threshold is None and bad.labels_needed is None  # 80 % observed: more labels cannot help


def test_suggest_threshold_keeps_the_stated_share_of_shown_answers() -> None:
    observations = [Observation(score=s / 10, correct=False, answerable=True, shown=True) for s in range(1, 11)]
    # 10 scores 0.1 … 1.0; keeping 90 % of them means the cut-off at the second lowest, 0.2.
    assert suggest_threshold_choose(observations, answer_threshold=None, share=0.9) == 0.2
    assert suggest_threshold_choose(observations, answer_threshold=0.15, share=0.9) == 0.15


def test_auroc_and_report() -> None:
    assert auroc([0.1, 0.4, 0.35, 0.8], [False, False, True, True]) == pytest.approx(0.75)
    assert auroc([0.5, 0.5], [False, True]) == pytest.approx(0.5)
    observations = [Observation(score=0.9, correct=True, answerable=True, shown=True),
                    Observation(score=0.8, correct=False, answerable=True, shown=True),
                    Observation(score=0.95, correct=False, answerable=False)]
    report = decisions_report(observations, ["answer", "suggest", "answer"])
    assert report.answer_precision == 0.5 and report.false_answer_rate == 1.0
    assert math.isclose(report.coverage, 2 / 3) and report.decisions == {"answer": 2, "suggest": 1, "handoff": 0}
