"""The ask pipeline: one question in, the right FAQ answer out, with evidence and a decision."""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.http import Http404
from django.utils import timezone
from psycopg.types.json import Jsonb

from chat import answer_cache
from chat.highlight import highlight
from chat.models import AskLog, Decision, Question, Ticket
from kbservice.metrics.recording import record_ask
from knowledge.models import FaqEntry, KnowledgeBase
from knowledge.selectors import Candidate, SearchFilters, faq_recall
from knowledge.text import strip_control_characters
from rerank.batching import RerankRequest
from rerank.services import RerankOutcome, rerank_score

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AskParams:
    question: str
    instruction: str = ""
    filters: SearchFilters = field(default_factory=SearchFilters)
    top_n: int | None = None


def question_params(question: Question) -> AskParams:
    """The parameters a stored question was asked with."""
    return AskParams(question=question.text, instruction=question.instruction,
                     filters=SearchFilters.from_dict(question.filters), top_n=question.top_n)


def question_clean(*, text: Any) -> str:
    """The question as asked, validated; raises ValidationError for what we cannot answer."""
    if not isinstance(text, str):
        raise ValidationError({"question": ["must be text"]})
    if strip_control_characters(text) != text:
        raise ValidationError({"question": ["contains control characters"]})
    text = text.strip()
    if not text:
        raise ValidationError({"question": ["must not be empty"]})
    if len(text) > settings.KB_MAX_QUESTION_CHARS:
        limit = settings.KB_MAX_QUESTION_CHARS
        raise ValidationError({"question": [f"is {len(text)} characters; the limit is {limit}"]})
    return text


def faq_rerank_document(entry: FaqEntry) -> str:
    # The summary sits next to the question: it states the customer's problem in system terms,
    # which is what lets the cross-encoder match colloquial questions to engineering answers.
    return "\n".join(part for part in (entry.question, entry.summary, entry.answer) if part.strip())


@dataclass(frozen=True)
class Thresholds:
    answer: float | None  # None: never auto-answer
    suggest: float
    calibrated: bool


def decision_thresholds(*, kb: KnowledgeBase, engine: str, model: str, language: str) -> Thresholds:
    """The calibration's thresholds when it measured this engine, model and embedding model (its
    thresholds for the question's language, when it was fitted per language); otherwise the
    uncalibrated rule: nothing vouches for any score, so never auto-answer, only suggest or hand off."""
    calibration = kb.calibration
    if calibration is None or not calibration.applies_to(engine=engine, model=model, embed_model=kb.embed_model):
        return Thresholds(answer=None, suggest=kb.suggest_threshold, calibrated=False)
    if not calibration.by_language:
        return Thresholds(answer=calibration.answer_threshold, suggest=calibration.suggest_threshold, calibrated=True)
    fitted = calibration.by_language.get(language)
    if fitted is None:  # no evidence in this language: its scores are vouched for by nothing
        return Thresholds(answer=None, suggest=calibration.suggest_threshold, calibrated=False)
    return Thresholds(answer=fitted["answer_threshold"], suggest=fitted["suggest_threshold"], calibrated=True)


def decide(*, thresholds: Thresholds, top_score: float | None, degraded: bool, has_candidates: bool) -> str:
    if not has_candidates:
        return Decision.HANDOFF
    if degraded or top_score is None:
        # Without the cross-encoder we cannot claim confidence: show candidates, let a person pick.
        return Decision.SUGGEST
    if thresholds.answer is not None and top_score >= thresholds.answer:
        return Decision.ANSWER
    if top_score >= thresholds.suggest:
        return Decision.SUGGEST
    return Decision.HANDOFF


def rerank_identity(outcome: RerankOutcome) -> tuple[str, str]:
    """The engine and model that scored (as the worker reports them), or the configured ones."""
    return (outcome.engine or settings.KB_RERANK_BACKEND,
            outcome.model or (settings.KB_RERANK_MODEL if settings.KB_RERANK_BACKEND != "lite" else "lite"))


def _entry_payload(candidate: Candidate, *, rank: int, rerank: float | None, question: str,
                   embed_model: str | None) -> dict[str, Any]:
    entry = candidate.entry
    marked = highlight(question=question, text=entry.answer, embed_model=embed_model)
    return {
        "id": entry.pk,
        "external_id": entry.external_id,
        "revision": entry.version,
        "question": entry.question,
        "answer": entry.answer,
        "summary": entry.summary,
        "tags": entry.tags,
        "category": entry.category,
        "language": entry.language,
        "rank": rank,
        "scores": {
            "vector": candidate.vector.score if candidate.vector else None,
            "keyword": candidate.fulltext.score if candidate.fulltext else None,
            "fused": candidate.fused,
            "rerank": rerank,
        },
        "recall_ranks": {"vector": candidate.vector_rank, "keyword": candidate.fulltext_rank},
        "highlight": marked.as_dict(),
    }


def answer_order(scores: list[float], *, reorder: bool) -> list[int]:
    """Indexes of the candidates in the order an answer shows them: by score, or recall's as they came."""
    return sorted(range(len(scores)), key=lambda index: -scores[index]) if reorder else list(range(len(scores)))


def compose_answer(*, kb: KnowledgeBase, params: AskParams, language: str, candidates: list[Candidate],
                   outcome: RerankOutcome, timings: dict[str, float]) -> dict[str, Any]:
    top_n = params.top_n or kb.top_n
    reordered = outcome.reorders(language)
    if outcome.status == "ok" and candidates:
        scores = outcome.scores[0]
        scored: list[tuple[Candidate, float | None]] = [
            (candidates[index], scores[index]) for index in answer_order(scores, reorder=reordered)]
    else:
        scored = [(candidate, None) for candidate in candidates]
    degraded = outcome.status != "ok" and bool(candidates)
    top_score = scored[0][1] if scored else None
    engine, model = rerank_identity(outcome)
    thresholds = decision_thresholds(kb=kb, engine=engine, model=model, language=language)
    decision = decide(thresholds=thresholds, top_score=top_score, degraded=degraded, has_candidates=bool(scored))
    started = time.perf_counter()
    shown = [
        _entry_payload(candidate, rank=rank, rerank=score, question=params.question,
                       embed_model=kb.embed_model if rank == 1 else None)
        for rank, (candidate, score) in enumerate(scored[:top_n], start=1)
    ]
    timings["highlight"] = round((time.perf_counter() - started) * 1000, 2)
    return {
        "decision": decision,
        "answer": shown[0] if shown else None,
        "alternatives": shown[1:],
        "candidates": [candidate.entry.pk for candidate, _ in scored],
        "rerank": {
            "engine": engine,
            "model": model,
            "status": "ok" if outcome.status == "ok" else ("skipped" if not candidates else "degraded"),
            **({"reason": outcome.reason} if outcome.status != "ok" and candidates else {}),
            # Whose order the candidates are in: an engine that orders worse than recall in this
            # language only scores (the decision), and the answer says so.
            "order": "reranked" if reordered else "recall",
            **({"order_reason": f"The {engine} reranker does not reorder {language} questions: its order was below "
                                f"recall's out of fold."} if outcome.status == "ok" and not reordered else {}),
        },
        "thresholds": {"answer": thresholds.answer, "suggest": thresholds.suggest},
        # Whether the decision came from a calibrated threshold; a degraded answer's did not.
        "calibrated": thresholds.calibrated and not degraded,
    }


def _compute(kb: KnowledgeBase, params: AskParams) -> tuple[dict[str, Any], bool]:
    timings: dict[str, float] = {}
    recall = faq_recall(kb=kb, query=params.question, filters=params.filters)
    timings.update({f"recall_{name}": ms for name, ms in recall.timings_ms.items()})
    outcome = RerankOutcome(status="ok", scores=[[]])
    if recall.candidates:
        started = time.perf_counter()
        documents = [faq_rerank_document(candidate.entry) for candidate in recall.candidates]
        outcome = rerank_score(requests=[RerankRequest(query=params.question, documents=documents,
                                                       instruction=params.instruction or kb.rerank_instruction)],
                               max_backlog=settings.KB_RERANK_MAX_BACKLOG, degrade_without_workers=True)
        timings["rerank"] = round((time.perf_counter() - started) * 1000, 2)
    value = compose_answer(kb=kb, params=params, language=recall.language, candidates=recall.candidates,
                           outcome=outcome, timings=timings)
    value["recall"] = {"language": recall.language, "fusion": recall.fusion}
    value["timings_ms"] = timings
    # A degraded answer is shared with identical in-flight asks but never cached: the next ask
    # should get the reranked one.
    return value, value["rerank"]["status"] != "degraded"


def _cache_key(kb: KnowledgeBase, params: AskParams, normalized: str) -> str:
    return answer_cache.cache_key(
        kb=kb.pk, generation=kb.content_generation, question=normalized,
        instruction=params.instruction or kb.rerank_instruction, filters=params.filters.as_dict(),
        top_n=params.top_n or kb.top_n, embed=kb.embed_model,
        rerank=[settings.KB_RERANK_BACKEND, settings.KB_RERANK_MODEL],
        thresholds=[kb.calibration_id, kb.suggest_threshold],
    )


def ask(*, kb: KnowledgeBase, params: AskParams, ticket: Ticket | None = None, customer: str = "",
        channel: str = "api", pending: Question | None = None) -> dict[str, Any]:
    """Answer a question (cached, single-flight), record it on a ticket and in the ask log.

    ``kb`` must be freshly loaded (every caller reads it for this ask): its content generation is
    part of the cache key."""
    started = time.perf_counter()
    normalized = answer_cache.normalize_question(params.question)
    cached = answer_cache.get_or_compute(
        _cache_key(kb, params, normalized), lambda: _compute(kb, params),
        ttl=settings.KB_ANSWER_CACHE_TTL, wait=settings.KB_RERANK_TIMEOUT + 2,
    )
    value = dict(cached.value)
    timings = dict(value.pop("timings_ms", {})) if cached.status == "miss" else {}
    timings["total"] = round((time.perf_counter() - started) * 1000, 2)
    recorded = ask_record(kb=kb, params=params, normalized=normalized, value=value, ticket=ticket,
                          customer=customer, channel=channel, cache=cached.status, timings=timings, pending=pending)
    record_ask(kb=kb.slug, decision=value["decision"], cache=cached.status, rerank=value["rerank"]["status"])
    if value["rerank"]["status"] == "degraded":
        transaction.on_commit(lambda: _enqueue_late_rerank(recorded.question_id))
    return {"ticket": str(recorded.ticket), "question_id": recorded.question_id, **value, "cache": cached.status,
            "timings_ms": timings}


@dataclass(frozen=True)
class Recorded:
    ticket: uuid.UUID
    question_id: int


# A new or followed-up ticket, its question and the ask log row in one statement, so one round trip
# to Postgres: this is most of what a cache hit costs. Atomic like any single statement.
_NEW_TICKET = """
    INSERT INTO chat_ticket (public_id, kb_id, status, customer, channel, created_at, updated_at)
    VALUES (%(public_id)s, %(kb)s, %(open)s, %(customer)s, %(channel)s, %(now)s, %(now)s)
    RETURNING id, public_id"""
_FOLLOW_UP = "UPDATE chat_ticket SET updated_at = %(now)s WHERE id = %(ticket)s RETURNING id, public_id"
_RECORD = """
WITH ticket AS ({ticket}),
question AS (
    INSERT INTO chat_question (ticket_id, text, normalized, instruction, filters, top_n, state, decision, response,
                               rerank_status, created_at, answered_at)
    SELECT ticket.id, %(text)s, %(normalized)s, %(instruction)s, %(filters)s, %(top_n)s, %(answered)s, %(decision)s,
           %(response)s, %(rerank_status)s, %(now)s, %(now)s
    FROM ticket
    RETURNING id
)
INSERT INTO chat_asklog (kb_id, question_id, text, normalized, decision, top_entry_id, top_score, cache, degraded,
                         timings_ms, source, created_at)
SELECT %(kb)s, question.id, %(text)s, %(normalized)s, %(decision)s, %(top_entry)s, %(top_score)s, %(cache)s,
       %(degraded)s, %(timings)s, %(channel)s, %(now)s
FROM question
RETURNING question_id, (SELECT public_id FROM ticket)"""


def ask_record(*, kb: KnowledgeBase, params: AskParams, normalized: str, value: dict[str, Any],
               ticket: Ticket | None, customer: str, channel: str, cache: str, timings: dict[str, float],
               pending: Question | None = None) -> Recorded:
    """Store the answer (on the pending question of an async ticket, or as a new question on a new
    or given ticket) and its ask log row."""
    if pending is not None:
        return _pending_answered(kb=kb, pending=pending, normalized=normalized, value=value, cache=cache,
                                 channel=channel, timings=timings)
    top = value["answer"]
    fields = {
        "public_id": uuid.uuid4(), "kb": kb.pk, "customer": customer, "channel": channel, "now": timezone.now(),
        "open": Ticket.Status.OPEN.value, "answered": Question.State.ANSWERED.value,
        "ticket": ticket.pk if ticket else None, "text": params.question, "normalized": normalized,
        "instruction": params.instruction, "filters": Jsonb(params.filters.as_dict()), "top_n": params.top_n,
        "decision": value["decision"], "response": Jsonb(value), "rerank_status": value["rerank"]["status"],
        "top_entry": top["id"] if top else None, "top_score": top["scores"]["rerank"] if top else None,
        "cache": cache, "degraded": value["rerank"]["status"] == "degraded", "timings": Jsonb(timings),
    }
    with connection.cursor() as cursor:
        cursor.execute(_RECORD.format(ticket=_FOLLOW_UP if ticket else _NEW_TICKET), fields)
        row = cursor.fetchone()
    if row is None:  # the followed-up ticket was deleted since it was looked up
        raise Http404("No such ticket.")
    question_id, public_id = row
    return Recorded(ticket=public_id, question_id=question_id)


@transaction.atomic
def _pending_answered(*, kb: KnowledgeBase, pending: Question, normalized: str, value: dict[str, Any], cache: str,
                      channel: str, timings: dict[str, float]) -> Recorded:
    # Conditional: of two deliveries of one question (a re-queued one, see questions_pending_sweep), or
    # an answer arriving after the sweep gave up on it, only the first records anything.
    answered = Question.objects.filter(pk=pending.pk, state=Question.State.PENDING).update(
        normalized=normalized, state=Question.State.ANSWERED, decision=value["decision"], response=value,
        rerank_status=value["rerank"]["status"], answered_at=timezone.now(),
    )
    question = Question.objects.select_related("ticket").get(pk=pending.pk)
    if not answered:
        return Recorded(ticket=question.ticket.public_id, question_id=question.pk)
    top = value["answer"]
    AskLog.objects.create(
        kb=kb, question=question, text=question.text, normalized=question.normalized, decision=value["decision"],
        top_entry_id=top["id"] if top else None, top_score=(top["scores"]["rerank"] if top else None),
        cache=cache, degraded=value["rerank"]["status"] == "degraded", timings_ms=timings, source=channel,
    )
    return Recorded(ticket=question.ticket.public_id, question_id=question.pk)


def _enqueue_late_rerank(question_id: int) -> None:
    from chat.tasks import question_rerank_late_task

    try:
        question_rerank_late_task.delay(question_id=question_id)
    except Exception:  # broker down: the degraded answer stands
        logger.warning("could not queue late rerank for question %s", question_id, exc_info=True)


def question_rerank_late(*, question_id: int) -> bool:
    """Rerank a question that was answered degraded and update its stored answer.

    Claimed with a conditional UPDATE on ``rerank_status``, so a redelivered task or a second
    worker never rewrites an answer that was already upgraded."""
    question = Question.objects.select_related("ticket__kb").filter(pk=question_id, rerank_status="degraded").first()
    if question is None:
        return False
    kb = question.ticket.kb
    params = question_params(question)
    recall = faq_recall(kb=kb, query=params.question, filters=params.filters)
    documents = [faq_rerank_document(candidate.entry) for candidate in recall.candidates]
    outcome = rerank_score(
        requests=[RerankRequest(query=params.question, documents=documents,
                                instruction=params.instruction or kb.rerank_instruction)],
        timeout=settings.KB_RERANK_EXPIRES,
    )
    if outcome.status != "ok":
        return False
    value = compose_answer(kb=kb, params=params, language=recall.language, candidates=recall.candidates,
                           outcome=outcome, timings={})
    value["rerank"]["late"] = True
    updated = Question.objects.filter(pk=question_id, rerank_status="degraded").update(
        response=value, decision=value["decision"], rerank_status="ok",
    )
    return updated == 1
