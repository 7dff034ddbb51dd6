"""The statistics of decisions: how good the top rerank score is at deciding, and the threshold search.

Pure functions over ``Observation`` lists (one per asked question: its top score, whether the top
entry is relevant, whether the question has an answer in the base at all). No database, no reranker:
``kb_eval``, ``kb_calibrate`` and the benchmarks all measure with the same code.

The answer threshold is chosen by the fixed-sequence procedure of Learn-then-Test (Angelopoulos et
al., 2021): cut-offs are tested from the strictest down on a grid fixed in advance, each with the
one-sided Clopper–Pearson lower bound of the precision of the questions it would auto-answer, and
the search stops at the first cut-off that fails. Because the order is fixed before the labels are
seen, every accepted cut-off holds at the stated confidence without a multiple-testing correction.
(Given the scores, the labels of the answered questions are independent but not identically
distributed; the binomial bound is conservative for such a sum, Hoeffding 1956.)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from scipy.stats import beta

# Fixed in advance, strictest first: 0.99, 0.98, …, 0.01. Rerank scores live in [0, 1].
GRID: tuple[float, ...] = tuple(round(1 - step / 100, 2) for step in range(1, 100))
# Share of answerable questions whose relevant entry must be among the suggestions shown at or above
# the suggest threshold (when it is among the shown candidates at all).
SUGGEST_SHARE = 0.9
# Bands of the expected calibration error.
ECE_BINS = 10


@dataclass(frozen=True)
class Observation:
    score: float | None  # top rerank score; None when nothing was recalled
    correct: bool  # the top entry is a relevant one (never for a no-answer question)
    answerable: bool  # the question has a relevant entry in the base
    shown: bool = False  # a relevant entry is among the top_n shown


def clopper_pearson_lower(*, successes: int, trials: int, confidence: float) -> float:
    """One-sided lower bound of a binomial proportion at ``confidence`` (exact, Clopper–Pearson)."""
    if trials == 0 or successes == 0:
        return 0.0
    return float(beta.ppf(1 - confidence, successes, trials - successes + 1))


@dataclass(frozen=True)
class CutoffRow:
    cutoff: float
    answered: int
    correct: int
    coverage: float  # share of all observations auto-answered at this cut-off
    precision: float | None
    lower_bound: float


def risk_coverage(observations: Sequence[Observation], *, confidence: float,
                  grid: Sequence[float] = GRID) -> list[CutoffRow]:
    """Precision (with its lower bound) and coverage of auto-answering at each cut-off of ``grid``."""
    rows = []
    total = len(observations)
    for cutoff in grid:
        answered = [o for o in observations if o.score is not None and o.score >= cutoff]
        correct = sum(o.correct for o in answered)
        rows.append(CutoffRow(
            cutoff=cutoff, answered=len(answered), correct=correct,
            coverage=len(answered) / total if total else 0.0,
            precision=correct / len(answered) if answered else None,
            lower_bound=clopper_pearson_lower(successes=correct, trials=len(answered), confidence=confidence),
        ))
    return rows


@dataclass(frozen=True)
class ThresholdSearch:
    answer_threshold: float | None  # None: no cut-off could be certified, never auto-answer
    precision_bound: float | None
    coverage: float
    tested: int  # cut-offs tested before stopping (those answering enough questions to be testable)
    labels_needed: int | None  # when nothing qualifies: more labelled questions likely to certify one


def fewest_to_certify(*, target: float, confidence: float) -> int:
    """Answered questions a cut-off needs before even all of them right could certify ``target``:
    (1 − confidence)^(1/n) ≥ target, the Clopper–Pearson bound of n out of n."""
    return max(1, math.ceil(math.log(1 - confidence) / math.log(target) - 1e-12))


def answer_threshold_search(observations: Sequence[Observation], *, target: float, confidence: float,
                            grid: Sequence[float] = GRID) -> ThresholdSearch:
    """The most permissive cut-off whose precision lower bound meets ``target``, by fixed sequence.

    A cut-off that answers fewer questions than ``fewest_to_certify`` cannot pass whatever the labels
    say (the strictest ones answer few or none): it is passed over without ending the sequence.
    Which cut-offs those are depends on how many scores lie above them, never on the labels, so the
    order of the tests is still fixed before any label is looked at."""
    rows = risk_coverage(observations, confidence=confidence, grid=grid)
    fewest = fewest_to_certify(target=target, confidence=confidence)
    accepted: CutoffRow | None = None
    tested = 0
    for row in rows:
        if row.answered < fewest:
            continue
        tested += 1
        if row.lower_bound < target:
            break
        accepted = row
    if accepted is not None:
        return ThresholdSearch(answer_threshold=accepted.cutoff, precision_bound=accepted.lower_bound,
                               coverage=accepted.coverage, tested=tested, labels_needed=None)
    return ThresholdSearch(answer_threshold=None, precision_bound=None, coverage=0.0, tested=tested,
                           labels_needed=labels_needed(rows, total=len(observations), target=target,
                                                       confidence=confidence))


def trials_needed(*, precision: float, target: float, confidence: float, limit: int = 100_000) -> int | None:
    """Fewest answered questions at which an observed ``precision`` would certify ``target``."""
    if precision <= target:
        return None
    trials = 1
    while trials <= limit:
        if clopper_pearson_lower(successes=math.floor(precision * trials), trials=trials,
                                 confidence=confidence) >= target:
            return trials
        trials = trials + max(1, trials // 10)
    return None


def labels_needed(rows: Sequence[CutoffRow], *, total: int, target: float, confidence: float) -> int | None:
    """More labelled questions (at the same mix) that would likely certify some cut-off: the fewest
    over the cut-offs, assuming their observed precision holds. None if no cut-off's precision is
    above the target, so that more labels of the same kind cannot help."""
    best: int | None = None
    for row in rows:
        if row.precision is None or row.coverage == 0:
            continue
        needed = trials_needed(precision=row.precision, target=target, confidence=confidence)
        if needed is None:
            continue
        more = max(1, math.ceil(needed / row.coverage) - total)
        best = more if best is None else min(best, more)
    return best


def suggest_threshold_choose(observations: Sequence[Observation], *, answer_threshold: float | None,
                             share: float = SUGGEST_SHARE) -> float:
    """The highest cut-off that keeps the relevant entry among the shown suggestions for ``share`` of
    the answerable questions where it is shown at all; at most the answer threshold."""
    scores = sorted(o.score for o in observations if o.answerable and o.shown and o.score is not None)
    if not scores:
        return 0.0
    # round() first: (1 - 0.9) * 10 is 0.999…, and 0.29 * 100 is 28.999…
    index = min(len(scores) - 1, math.floor(round((1 - share) * len(scores), 9)))
    chosen = math.floor(round(scores[index] * 100, 6)) / 100  # on the grid's resolution, rounded down
    return min(chosen, answer_threshold) if answer_threshold is not None else chosen


def auroc(scores: Sequence[float], labels: Sequence[bool]) -> float | None:
    """Area under the ROC curve: the chance a positive outscores a negative (ties count half)."""
    ranked = sorted(zip(scores, labels, strict=True), key=lambda pair: pair[0])
    positives = sum(labels)
    negatives = len(labels) - positives
    if not positives or not negatives:
        return None
    rank_sum = 0.0
    index = 0
    while index < len(ranked):
        end = index
        while end + 1 < len(ranked) and ranked[end + 1][0] == ranked[index][0]:
            end += 1
        average_rank = (index + end) / 2 + 1
        rank_sum += average_rank * sum(1 for _, label in ranked[index:end + 1] if label)
        index = end + 1
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


def expected_calibration_error(scores: Sequence[float], labels: Sequence[bool], bins: int = ECE_BINS) -> float | None:
    """Mean gap between score and observed accuracy, over equal-width score bands, weighted by size."""
    if not scores:
        return None
    total = 0.0
    for band in range(bins):
        low, high = band / bins, (band + 1) / bins
        members = [(s, y) for s, y in zip(scores, labels, strict=True)
                   if low <= s < high or (band == bins - 1 and s == 1.0)]
        if members:
            mean_score = sum(s for s, _ in members) / len(members)
            accuracy = sum(y for _, y in members) / len(members)
            total += len(members) * abs(mean_score - accuracy)
    return total / len(scores)


@dataclass(frozen=True)
class DecisionReport:
    questions: int
    answerable: int
    decisions: dict[str, int]
    answer_precision: float | None
    coverage: float
    false_answer_rate: float | None  # share of no-answer questions auto-answered
    auroc: float | None
    ece: float | None


def decisions_report(observations: Sequence[Observation], decisions: Sequence[str]) -> DecisionReport:
    """What the decisions made of these questions: precision of ``answer``, coverage, the false-answer
    rate on no-answer questions, and how well the top score separates right from wrong (answerable
    questions with a score)."""
    counts = {"answer": 0, "suggest": 0, "handoff": 0}
    for decision in decisions:
        counts[decision] += 1
    answered = [o for o, d in zip(observations, decisions, strict=True) if d == "answer"]
    no_answer = [d for o, d in zip(observations, decisions, strict=True) if not o.answerable]
    scored = [o for o in observations if o.answerable and o.score is not None]
    score_list = [float(o.score) for o in scored if o.score is not None]
    labels = [o.correct for o in scored]
    return DecisionReport(
        questions=len(observations), answerable=sum(o.answerable for o in observations), decisions=counts,
        answer_precision=sum(o.correct for o in answered) / len(answered) if answered else None,
        coverage=len(answered) / len(observations) if observations else 0.0,
        false_answer_rate=sum(d == "answer" for d in no_answer) / len(no_answer) if no_answer else None,
        auroc=auroc(score_list, labels), ece=expected_calibration_error(score_list, labels),
    )
