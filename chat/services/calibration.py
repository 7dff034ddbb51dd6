"""Calibrating a knowledge base: gather its evidence, ask it through the real pipeline, fit the thresholds.

Evidence comes from three sources, counted separately in the record:

* labelled query files (``--queries``): a line with relevant ids is an answerable question, one with
  ``relevant_ids: []`` a no-answer question; optionally each answerable one is asked again with its
  relevant entries left out (a simulated no-answer question);
* the base's own alternate phrasings (an entry's similar questions): asked with the entry present
  (that phrasing itself left out of recall, or it would find itself) they are answerable questions,
  with the entry left out no-answer questions;
* reviewed console feedback (an agent marked the answer helpful or not, or picked an alternative).
  Customer thumbs are noisy and biased: they are counted for monitoring, never used.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from django.conf import settings

from chat.calibration import (
    SUGGEST_SHARE,
    Observation,
    answer_threshold_search,
    risk_coverage,
    suggest_threshold_choose,
)
from chat.evaluation import LabelledQuery, Scored, queries_score
from chat.models import Feedback
from knowledge.models import Calibration, FaqEntry, FaqStatus, KnowledgeBase
from knowledge.selectors import HeldOutPhrasing
from knowledge.services import knowledge_base_calibration_record

QUERIES = "queries"
QUERIES_LEFT_OUT = "queries_left_out"
SIMILAR = "similar_questions"
SIMILAR_LEFT_OUT = "similar_questions_left_out"
FEEDBACK = "reviewed_feedback"

logger = logging.getLogger(__name__)


class CalibrationError(Exception):
    """Nothing to calibrate on, or a bad setting; the message says what to do."""


@dataclass(frozen=True)
class Evidence:
    source: str
    query: LabelledQuery
    unhelpful: int | None = None  # feedback "not helpful" on this entry, without a better one picked


def target_check(*, target: Any, name: str = "target") -> float:
    """A precision or confidence strictly between 0 and 1, or a CalibrationError naming it."""
    if isinstance(target, bool) or not isinstance(target, int | float) or not 0 < target < 1:
        raise CalibrationError(f"{name} must be a number strictly between 0 and 1 (e.g. 0.9), not {target!r}")
    return float(target)


def evidence_from_queries(*, kb: KnowledgeBase, rows: Sequence[dict[str, Any]],
                          simulate_no_answer: bool) -> list[Evidence]:
    """Labelled query lines (external ids); lines naming no entry of this base are left out."""
    ids = dict(FaqEntry.objects.filter(kb=kb, status=FaqStatus.PUBLISHED).exclude(external_id=None)
               .values_list("external_id", "pk"))
    evidence = []
    for row in rows:
        relevant = frozenset(ids[str(x)] for x in row["relevant_ids"] if str(x) in ids)
        if row["relevant_ids"] and not relevant:
            continue
        evidence.append(Evidence(QUERIES, LabelledQuery(query=row["query"], relevant=relevant)))
        if simulate_no_answer and relevant:
            evidence.append(Evidence(QUERIES_LEFT_OUT, LabelledQuery(query=row["query"], relevant=frozenset(),
                                                                      exclude=tuple(sorted(relevant)))))
    return evidence


def evidence_from_similar_questions(*, kb: KnowledgeBase) -> list[Evidence]:
    evidence = []
    rows = (FaqEntry.objects.filter(kb=kb, status=FaqStatus.PUBLISHED).exclude(similar_questions=[])
            .values_list("pk", "similar_questions"))
    for entry_id, phrasings in rows:
        for number, phrasing in enumerate(phrasings, start=1):
            if not phrasing.strip():
                continue
            held_out = HeldOutPhrasing(entry_id=entry_id, number=number, text=phrasing)
            evidence.append(Evidence(SIMILAR, LabelledQuery(query=phrasing, relevant=frozenset({entry_id}),
                                                            held_out=held_out)))
            evidence.append(Evidence(SIMILAR_LEFT_OUT, LabelledQuery(query=phrasing, relevant=frozenset(),
                                                                      exclude=(entry_id,))))
    return evidence


def evidence_from_feedback(*, kb: KnowledgeBase) -> tuple[list[Evidence], int]:
    """Agents' reviews, newest per question, and the id of the newest one used. The question is asked
    again, so its score is the current reranker's on the current content."""
    reviewed = (Feedback.objects.filter(question__ticket__kb=kb, source=Feedback.Source.AGENT)
                .filter(helpful__isnull=False) | Feedback.objects.filter(
                    question__ticket__kb=kb, source=Feedback.Source.AGENT, chosen_entry__isnull=False))
    latest: dict[int, Feedback] = {}
    for feedback in reviewed.select_related("question").order_by("pk"):
        latest[feedback.question_id] = feedback
    published = set(FaqEntry.objects.filter(kb=kb, status=FaqStatus.PUBLISHED).values_list("pk", flat=True))
    evidence = []
    for feedback in latest.values():
        answered = (feedback.question.response.get("answer") or {}).get("id")
        text = feedback.question.text
        chosen = feedback.chosen_entry_id
        if chosen is not None and chosen in published:
            evidence.append(Evidence(FEEDBACK, LabelledQuery(query=text, relevant=frozenset({chosen}))))
        elif feedback.helpful is True and answered in published:
            evidence.append(Evidence(FEEDBACK, LabelledQuery(query=text, relevant=frozenset({answered}))))
        elif feedback.helpful is False and answered is not None:
            evidence.append(Evidence(FEEDBACK, LabelledQuery(query=text, relevant=frozenset()), unhelpful=answered))
    newest = max((feedback.pk for feedback in latest.values()), default=0)
    return evidence, newest


def customer_feedback_count(*, kb: KnowledgeBase) -> int:
    return Feedback.objects.filter(question__ticket__kb=kb, source=Feedback.Source.CUSTOMER).count()


def _observation(evidence: Evidence, scored: Scored, *, top_n: int) -> Observation | None:
    """None for an unhelpful mark whose entry is no longer the top one: what is right is then unknown."""
    if evidence.unhelpful is not None:
        if not scored.reranked or scored.reranked[0] != evidence.unhelpful:
            return None
        return Observation(score=scored.scores[0], correct=False, answerable=True, shown=False)
    return scored.observation(top_n=top_n)


def knowledge_base_calibrate(*, kb: KnowledgeBase, query_rows: Sequence[dict[str, Any]] = (),
                             simulate_no_answer: bool = False, target: float | None = None,
                             confidence: float | None = None, use_feedback: bool = True,
                             progress: Callable[[int], None] | None = None) -> Calibration:
    """Ask every piece of evidence, choose the thresholds, record the calibration and put it in force.

    Raises CalibrationError, changing nothing, when there is no usable evidence."""
    target = target_check(target=kb.target_precision if target is None else target)
    confidence = target_check(target=kb.target_confidence if confidence is None else confidence, name="confidence")
    evidence = [*evidence_from_queries(kb=kb, rows=query_rows, simulate_no_answer=simulate_no_answer),
                *evidence_from_similar_questions(kb=kb)]
    feedback_until = 0
    if use_feedback:
        reviewed, feedback_until = evidence_from_feedback(kb=kb)
        evidence.extend(reviewed)
    if not evidence:
        raise CalibrationError(
            f"No usable evidence for {kb.slug!r}: no labelled queries naming its published entries, no similar "
            "questions on its entries and no reviewed console feedback. Add similar questions to entries, pass "
            "--queries FILE.jsonl, or review answers in the console; nothing was changed.")
    run = queries_score(kb=kb, queries=[item.query for item in evidence], progress=progress)
    counts: dict[str, dict[str, int]] = {}
    observations: list[Observation] = []
    by_language: dict[str, list[Observation]] = {}
    for item, scored in zip(evidence, run.scored, strict=True):
        observation = _observation(item, scored, top_n=kb.top_n)
        if observation is None:
            continue
        observations.append(observation)
        by_language.setdefault(scored.recall.language, []).append(observation)
        bucket = counts.setdefault(item.source, {"questions": 0, "answerable": 0, "no_answer": 0})
        bucket["questions"] += 1
        bucket["answerable" if observation.answerable else "no_answer"] += 1
    counts["customer_feedback_not_used"] = {"questions": customer_feedback_count(kb=kb)}
    found = answer_threshold_search(observations, target=target, confidence=confidence)
    suggest = suggest_threshold_choose(observations, answer_threshold=found.answer_threshold)
    no_answer = [o for o in observations if not o.answerable]
    summary = {
        "cutoffs_tested": found.tested, "suggest_share": SUGGEST_SHARE,
        "no_answer_handed_off": (sum(o.score is None or o.score < suggest for o in no_answer) / len(no_answer)
                                 if no_answer else None),
        "questions": len(observations),
    }
    per_language = {} if len(by_language) < 2 else {
        language: language_thresholds_fit(group, target=target, confidence=confidence)
        for language, group in sorted(by_language.items())}
    return knowledge_base_calibration_record(
        kb_id=kb.pk, engine=run.engine, model=run.model, target_precision=target, confidence=confidence,
        answer_threshold=found.answer_threshold, suggest_threshold=suggest, precision_bound=found.precision_bound,
        coverage=found.coverage, labels_needed=found.labels_needed, evidence=counts,
        risk_coverage=[asdict(row) for row in risk_coverage(observations, confidence=confidence)],
        summary=summary, feedback_until=feedback_until, by_language=per_language,
    )


def language_thresholds_fit(observations: Sequence[Observation], *, target: float, confidence: float
                            ) -> dict[str, Any]:
    """One language's thresholds, searched on its questions alone: its guarantee is about its questions."""
    found = answer_threshold_search(observations, target=target, confidence=confidence)
    return {"answer_threshold": found.answer_threshold,
            "suggest_threshold": suggest_threshold_choose(observations, answer_threshold=found.answer_threshold),
            "precision_bound": found.precision_bound, "coverage": found.coverage,
            "labels_needed": found.labels_needed, "questions": len(observations)}


def knowledge_base_calibrate_by_id(*, kb_id: int) -> int | None:
    """Calibrate on the base's own evidence; the new calibration's id, or None (logged) when it has none."""
    kb = KnowledgeBase.objects.filter(pk=kb_id).first()
    if kb is None:
        return None
    try:
        return knowledge_base_calibrate(kb=kb).pk
    except CalibrationError as exc:
        logger.warning("calibration of %s skipped: %s", kb.slug, exc)
        return None


def knowledge_bases_recalibrate_due() -> list[int]:
    """Bases with at least KB_CALIBRATION_MIN_NEW_FEEDBACK reviews newer than their calibration, recalibrated.

    The re-calibration uses the base's own evidence; the labels of a query file given to kb_calibrate
    by hand are not kept, so pass the file again to keep them in."""
    recalibrated = []
    for kb in KnowledgeBase.objects.select_related("calibration").exclude(calibration=None):
        calibration = kb.calibration
        if calibration is None:
            continue
        new = Feedback.objects.filter(question__ticket__kb=kb, source=Feedback.Source.AGENT,
                                      pk__gt=calibration.feedback_until).count()
        if new >= settings.KB_CALIBRATION_MIN_NEW_FEEDBACK:
            calibration_id = knowledge_base_calibrate_by_id(kb_id=kb.pk)
            if calibration_id is not None:
                recalibrated.append(calibration_id)
    return recalibrated
