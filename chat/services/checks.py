"""The case check: a knowledge base's regression cases scored as it is and as it would be after a
change, through the ask pipeline's own recall, rerank and decision.

The change is applied inside a transaction (its entries embedded synchronously), the cases are
scored against what that transaction sees, and the transaction is rolled back: nothing customers
see changes, no embedding is queued (on-commit hooks of a rolled-back block never run) and the
answer cache is never read or written. While a check runs it holds the locks the change takes
(the entry's row, the knowledge base's row), so concurrent writes to the base wait for it."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from django.contrib.auth.models import User
from django.core.cache import cache
from django.db import transaction
from django.utils import timezone
from reversion import revisions as reversion_revisions

from chat.evaluation import EvaluationError, LabelledQuery, Scored, ScoringMemo, queries_score
from chat.models import Decision
from chat.services.ask import decide, decision_thresholds
from knowledge.cases.changes import FaqChange
from knowledge.cases.selectors import regression_cases_active
from knowledge.models import CaseCheck, CaseExpect, KnowledgeBase, RegressionCase
from knowledge.services import Actor, faq_entries_embed, faq_revisions_checked

logger = logging.getLogger(__name__)

FIXED, BROKEN, UNCHANGED = "fixed", "broken", "unchanged"
PROGRESS_TTL = 3600


class CheckUnavailable(Exception):
    """The cases could not be scored (no rerank worker answered); nothing was written."""


def _progress_key(check_id: int) -> str:
    return f"case-check-progress:{check_id}"


def case_check_progress(*, check: CaseCheck) -> int:
    """Scorings done: the row's count, or while the change's transaction is open (its writes are
    invisible to other connections) the count the check keeps in Redis."""
    live = cache.get(_progress_key(check.pk))
    return max(check.done, int(live or 0))


def case_passes(*, expect: str, entry_id: int | None, decision: str, shown: Sequence[int]) -> bool:
    """answer: the entry is the auto-answer; suggest: it is shown (answered or suggested);
    no_answer: nothing is auto-answered."""
    if expect == CaseExpect.ANSWER:
        return decision == Decision.ANSWER and bool(shown) and shown[0] == entry_id
    if expect == CaseExpect.SUGGEST:
        return decision != Decision.HANDOFF and entry_id in shown
    return decision != Decision.ANSWER


def _outcome(*, kb: KnowledgeBase, case: RegressionCase, scored: Scored, engine: str, model: str) -> dict[str, Any]:
    thresholds = decision_thresholds(kb=kb, engine=engine, model=model, language=scored.recall.language)
    top = scored.scores[0] if scored.scores else None
    decision = decide(thresholds=thresholds, top_score=top, degraded=False, has_candidates=bool(scored.reranked))
    shown = scored.reranked[: kb.top_n]
    rank = scored.reranked.index(case.entry_id) + 1 if case.entry_id in scored.reranked else None
    return {
        "decision": decision, "top_entry": scored.reranked[0] if scored.reranked else None,
        "score": round(top, 4) if top is not None else None, "rank": rank,
        "entry_score": round(scored.scores[rank - 1], 4) if rank else None,
        "passed": case_passes(expect=case.expect, entry_id=case.entry_id, decision=decision, shown=shown),
    }


def cases_score(*, kb: KnowledgeBase, cases: Sequence[RegressionCase],
                progress: Callable[[int], None] | None = None, memo: ScoringMemo | None = None,
                ) -> list[dict[str, Any]]:
    """Each case asked as a customer would ask it (recall, rerank, the calibrated decision)."""
    queries = [LabelledQuery(query=case.question, relevant=frozenset({case.entry_id} if case.entry_id else ()))
               for case in cases]
    try:
        run = queries_score(kb=kb, queries=queries, progress=progress, memo=memo)
    except EvaluationError as error:
        raise CheckUnavailable(str(error)) from error
    return [_outcome(kb=kb, case=case, scored=scored, engine=run.engine, model=run.model)
            for case, scored in zip(cases, run.scored, strict=True)]


@contextmanager
def _outside_any_revision() -> Iterator[None]:
    """Writes inside join the revision an outer ``reversion.create_revision()`` collects (the admin
    wraps its whole change view in one), and it would save them after the check rolled back: give
    the check a revision stack of its own. (django-reversion has no public way to do this.)"""
    token = reversion_revisions._stack.set([])
    try:
        yield
    finally:
        reversion_revisions._stack.reset(token)


def _score_after(*, kb: KnowledgeBase, cases: Sequence[RegressionCase], apply: Callable[[], Iterable[int]],
                 progress: Callable[[int], None] | None, memo: ScoringMemo,
                 ) -> tuple[list[dict[str, Any]], list[int]]:
    with _outside_any_revision(), transaction.atomic():
        touched = list(apply())
        faq_entries_embed(entry_ids=touched)  # synchronously: the worker would only see committed text
        changed = KnowledgeBase.objects.select_related("calibration").get(pk=kb.pk)
        after = cases_score(kb=changed, cases=cases, progress=progress, memo=memo)
        transaction.set_rollback(True)
    return after, touched


def _diff(cases: Sequence[RegressionCase], before: list[dict[str, Any]],
          after: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for case, old, new in zip(cases, before, after, strict=True):
        outcome = UNCHANGED if old["passed"] == new["passed"] else (FIXED if new["passed"] else BROKEN)
        rows.append({"case": case.pk, "question": case.question, "expect": case.expect, "entry": case.entry_id,
                     "entry_question": case.entry.question[:200] if case.entry else None,
                     "before": old, "after": new, "outcome": outcome})
    return rows


def faq_change_check(
    *, kb: KnowledgeBase, change: FaqChange | None = None, apply: Callable[[], Iterable[int]] | None = None,
    trigger: str = "", actor: Actor = None, record: CaseCheck | None = None,
    progress: Callable[[int], None] | None = None,
) -> CaseCheck:
    """Score the cases before and after ``change`` (or ``apply``, for writes not described as a
    FaqChange, such as an import); without either, run them against the base as it is.

    Raises the change's own errors (ValidationError, FaqEntryConflict) and CheckUnavailable. The
    only row written is the CaseCheck record (``record``, when a task was queued for it)."""
    if change is not None:
        def apply() -> list[int]:
            return change.apply(actor=actor)
    started = time.perf_counter()
    kb = KnowledgeBase.objects.select_related("calibration").get(pk=kb.pk)
    cases = list(regression_cases_active(kb=kb))
    check = record or CaseCheck(kb=kb, trigger=trigger or (change.describe() if change else "run"),
                                change=change.as_dict() if change else {},
                                created_by=actor if isinstance(actor, User) else None)
    check.cases, check.status = len(cases), CaseCheck.Status.RUNNING
    done = 0

    def step(count: int) -> None:
        nonlocal done
        done += count
        if progress is not None:
            progress(count)
        if check.pk:
            cache.set(_progress_key(check.pk), done, PROGRESS_TTL)

    if check.pk:
        CaseCheck.objects.filter(pk=check.pk).update(status=check.status, cases=check.cases)
    # After the change only the cases whose candidates or their text changed are reranked again.
    memo = ScoringMemo()
    before = cases_score(kb=kb, cases=cases, progress=step, memo=memo)
    after, touched = (before, []) if apply is None else _score_after(kb=kb, cases=cases, apply=apply, progress=step,
                                                                     memo=memo)
    rows = _diff(cases, before, after)
    check.entries = list(dict.fromkeys([*touched, *(change.entry_ids if change else ())]))
    check.results, check.done, check.status = rows, done, CaseCheck.Status.DONE
    check.passed_before = sum(row["before"]["passed"] for row in rows)
    check.passed_after = sum(row["after"]["passed"] for row in rows)
    check.fixed = sum(row["outcome"] == FIXED for row in rows)
    check.broken = sum(row["outcome"] == BROKEN for row in rows)
    check.seconds = round(time.perf_counter() - started, 3)
    check.save()
    return check


def case_check_summary(check: CaseCheck) -> dict[str, Any]:
    """The check as the API and the admin report it: counts, then the cases that changed first."""
    order = {BROKEN: 0, FIXED: 1, UNCHANGED: 2}
    return {
        "id": check.pk, "trigger": check.trigger, "status": check.status, "cases": check.cases,
        "passed_before": check.passed_before, "passed_after": check.passed_after, "fixed": check.fixed,
        "broken": check.broken, "unchanged": check.cases - check.fixed - check.broken, "seconds": check.seconds,
        "created_at": timezone.localtime(check.created_at).isoformat() if check.created_at else None,
        "results": sorted(check.results, key=lambda row: (order[row["outcome"]], row["case"])),
    }


class CasesBroken(Exception):
    """The change would break regression cases; nothing was written."""

    def __init__(self, check: CaseCheck) -> None:
        super().__init__(f"This change would break {check.broken} regression case(s) of {check.kb.slug}; nothing "
                         "was written. Send it again with force (and a reason) to write it anyway.")
        self.check = check


def faq_change_write_checked(
    *, kb: KnowledgeBase, change: FaqChange, actor: Actor = None, force: bool = False, reason: str = "",
    check: CaseCheck | None = None,
) -> tuple[list[int], CaseCheck | None]:
    """Check ``change`` against the cases (unless ``check`` already did), then write it. A change that
    breaks a case raises CasesBroken unless ``force``; every revision written records the check and
    any override (``RevisionCheck``). A base without cases is written unchecked."""
    if check is None and regression_cases_active(kb=kb).exists():
        check = faq_change_check(kb=kb, change=change, actor=actor)
    if check is not None and check.broken and not force:
        raise CasesBroken(check)
    if check is None:
        return change.apply(actor=actor), None
    with faq_revisions_checked(check_id=check.pk, broken=check.broken, fixed=check.fixed,
                               forced=force and check.broken > 0, reason=reason.strip()):
        written = change.apply(actor=actor)
    return written, check


def case_check_queue(*, kb: KnowledgeBase, change: FaqChange, actor: Actor = None) -> CaseCheck:
    """Record a check of ``change`` and score it in a Celery task (sent after commit)."""
    from chat.tasks import case_check_task

    check = CaseCheck.objects.create(kb=kb, trigger=change.describe(), change=change.as_dict(),
                                     entries=list(change.entry_ids), cases=regression_cases_active(kb=kb).count(),
                                     created_by=actor if isinstance(actor, User) else None)
    transaction.on_commit(lambda: case_check_task.delay(check_id=check.pk))
    return check


def case_check_run_queued(*, check_id: int) -> bool:
    """Claimed with a conditional UPDATE: a redelivered task does not score the same check twice."""
    if not CaseCheck.objects.filter(pk=check_id, status=CaseCheck.Status.QUEUED).update(
            status=CaseCheck.Status.RUNNING):
        return False
    check = CaseCheck.objects.select_related("kb", "created_by").get(pk=check_id)
    try:
        faq_change_check(kb=check.kb, change=FaqChange.from_dict(check.change), actor=check.created_by, record=check)
    except Exception as error:  # the change no longer applies (a conflict, a bad value) or no reranker answered
        CaseCheck.objects.filter(pk=check_id).update(status=CaseCheck.Status.FAILED, error=str(error)[:2000])
        logger.warning("case check %s failed: %s", check_id, error)
    return True
