"""Reads for the agent console and the knowledge analytics. Writes live in ``chat.services``.

Analytics leave out the workbench's own asks (channel/source ``workbench``): they are staff
experiments, not customers, and would skew the mix, the latency and the unanswered queue.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import numpy as np
from django.contrib.auth.models import User
from django.core.cache import cache
from django.db.models import (
    Aggregate,
    Case,
    Count,
    F,
    FloatField,
    IntegerField,
    Max,
    OuterRef,
    Prefetch,
    Q,
    QuerySet,
    Subquery,
    Value,
    When,
)
from django.db.models.fields.json import KT
from django.db.models.functions import Cast, TruncDate
from django.utils import timezone

from chat.models import AskLog, Decision, Feedback, Message, Question, Scope, Ticket, WorkbenchRun
from chat.services.ask import faq_rerank_document
from kbservice.api.auth import ROLE_SCOPES
from knowledge.embedding import get_embedder
from knowledge.models import FaqEntry, FaqStatus, KnowledgeBase

WORKBENCH = "workbench"
INBOX_PAGE = 50
AGES: dict[str, tuple[timedelta | None, timedelta | None]] = {
    # name: (younger than, older than)
    "1h": (timedelta(hours=1), None),
    "24h": (timedelta(hours=24), None),
    "7d": (timedelta(days=7), None),
    "older": (None, timedelta(days=7)),
}
INBOX_ASSIGNEES = ("", "mine", "unassigned")
INBOX_STATUSES = ("attention", Ticket.Status.OPEN, Ticket.Status.HANDED_OFF, Ticket.Status.RESOLVED, "all")
# Cosine similarity (multilingual-e5) above which two differently worded questions count as one.
# Paraphrases score 0.92-0.97; unrelated support questions reach 0.89, so the bar sits above that.
SIMILAR_WORDING = 0.92
# Embedding questions costs ~35 ms each on a CPU: only the biggest groups are merged by meaning.
MAX_EMBEDDED_GROUPS = 60
EMBED_CACHE_TTL = 24 * 3600


# --- Inbox ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InboxFilters:
    status: str = "attention"
    kb: str = ""
    decision: str = ""
    age: str = ""
    assignee: str = ""  # "mine" or "unassigned"
    agent_id: int | None = None  # who "mine" is

    @classmethod
    def from_query(cls, query: Any, *, agent_id: int | None = None) -> InboxFilters:
        status = query.get("status", "attention")
        decision = query.get("decision", "")
        age = query.get("age", "")
        assignee = query.get("assignee", "")
        return cls(
            status=status if status in INBOX_STATUSES else "attention",
            kb=str(query.get("kb", ""))[:64],
            decision=decision if decision in Decision.values else "",
            age=age if age in AGES else "",
            assignee=assignee if assignee in INBOX_ASSIGNEES else "",
            agent_id=agent_id,
        )


def _tickets_filtered(filters: InboxFilters, *, now: datetime | None = None) -> QuerySet[Ticket]:
    tickets = Ticket.objects.exclude(channel=WORKBENCH)
    if filters.assignee == "mine":
        tickets = tickets.filter(assigned_to_id=filters.agent_id)
    elif filters.assignee == "unassigned":
        tickets = tickets.filter(assigned_to__isnull=True)
    if filters.kb:
        tickets = tickets.filter(kb__slug=filters.kb)
    if filters.age:
        now = now or timezone.now()
        younger, older = AGES[filters.age]
        if younger is not None:
            tickets = tickets.filter(created_at__gte=now - younger)
        if older is not None:
            tickets = tickets.filter(created_at__lt=now - older)
    latest = Question.objects.filter(ticket=OuterRef("pk")).order_by("-created_at", "-pk")
    tickets = tickets.annotate(latest_decision=Subquery(latest.values("decision")[:1]))
    if filters.decision:
        tickets = tickets.filter(latest_decision=filters.decision)
    return tickets


def ticket_inbox(*, filters: InboxFilters, now: datetime | None = None) -> QuerySet[Ticket]:
    """Tickets for the agent inbox: handed-off ones first (a customer is waiting for a person)."""
    tickets = _tickets_filtered(filters, now=now)
    if filters.status == "attention":
        tickets = tickets.filter(status__in=[Ticket.Status.OPEN, Ticket.Status.HANDED_OFF])
    elif filters.status != "all":
        tickets = tickets.filter(status=filters.status)
    first = Question.objects.filter(ticket=OuterRef("pk")).order_by("created_at", "pk")
    said = Message.objects.filter(ticket=OuterRef("pk")).exclude(kind=Message.Kind.EVENT).order_by("-pk")
    return (
        tickets.select_related("kb", "assigned_to")
        .annotate(
            question_count=Count("questions"),
            first_question=Subquery(first.values("text")[:1]),
            last_message=Subquery(said.values("body")[:1]),
            last_message_kind=Subquery(said.values("kind")[:1]),
            waiting_first=Case(When(status=Ticket.Status.HANDED_OFF, then=Value(0)), default=Value(1),
                               output_field=IntegerField()),
        )
        .order_by("waiting_first", "-updated_at", "-pk")
    )


def ticket_status_counts(*, filters: InboxFilters, now: datetime | None = None) -> dict[str, int]:
    """How many tickets each status tab holds under the other filters."""
    rows = _tickets_filtered(filters, now=now).order_by().values("status").annotate(n=Count("pk"))
    counts = {row["status"]: row["n"] for row in rows}
    counts["attention"] = counts.get(Ticket.Status.OPEN, 0) + counts.get(Ticket.Status.HANDED_OFF, 0)
    counts["all"] = sum(counts.get(status, 0) for status in Ticket.Status.values)
    return counts


def ticket_detail(*, public_id: Any) -> Ticket | None:
    feedback = Feedback.objects.select_related("chosen_entry", "created_by").order_by("created_at", "pk")
    questions = Question.objects.order_by("created_at", "pk").prefetch_related(Prefetch("feedback", queryset=feedback))
    return (
        Ticket.objects.select_related("kb", "assigned_to")
        .prefetch_related(Prefetch("questions", queryset=questions),
                          Prefetch("messages", queryset=Message.objects.select_related("entry").order_by("pk")))
        .filter(public_id=public_id)
        .first()
    )


def agents_active() -> QuerySet[User]:
    """Who can work tickets: active superusers and members of a role with the tickets scope."""
    in_role = Q(is_superuser=True)
    for name, scopes in ROLE_SCOPES.items():
        if Scope.TICKETS in scopes:
            in_role |= Q(groups__name__iexact=name)  # role names match case-insensitively (user_scopes)
    return User.objects.filter(in_role, is_active=True).distinct().order_by("username")


def agent_find(*, pk: Any) -> User | None:
    try:
        return agents_active().filter(pk=int(pk)).first()
    except (TypeError, ValueError):
        return None


def knowledge_bases() -> QuerySet[KnowledgeBase]:
    return KnowledgeBase.objects.select_related("calibration").order_by("slug")


def workbench_runs_recent(*, user: Any, limit: int = 20) -> QuerySet[WorkbenchRun]:
    return WorkbenchRun.objects.filter(created_by=user).select_related("kb").defer("documents", "result")[:limit]


# --- Asks: volume, mix, cache, latency ----------------------------------------------------------


class Percentile(Aggregate):
    """Postgres ``percentile_cont(f) WITHIN GROUP (ORDER BY expr)``; rows where expr is NULL are skipped."""

    function = "percentile_cont"
    template = "%(function)s(%(fraction)s) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = FloatField()

    def __init__(self, expression: Any, *, fraction: float, **extra: Any) -> None:
        if not 0 <= fraction <= 1:
            raise ValueError("fraction must be within [0, 1]")
        super().__init__(expression, fraction=repr(float(fraction)), **extra)


def _total_ms() -> Cast:
    return Cast(KT("timings_ms__total"), FloatField())


def _aggregates() -> dict[str, Any]:
    return {
        "total": Count("pk"),
        "answer": Count("pk", filter=Q(decision=Decision.ANSWER)),
        "suggest": Count("pk", filter=Q(decision=Decision.SUGGEST)),
        "handoff": Count("pk", filter=Q(decision=Decision.HANDOFF)),
        "cache_hits": Count("pk", filter=Q(cache="hit")),
        "degraded_count": Count("pk", filter=Q(degraded=True)),
        "p50": Percentile(_total_ms(), fraction=0.5),
        "p95": Percentile(_total_ms(), fraction=0.95),
    }


def ask_logs(*, kb: KnowledgeBase | None, since: datetime) -> QuerySet[AskLog]:
    logs = AskLog.objects.filter(created_at__gte=since).exclude(source=WORKBENCH)
    return logs.filter(kb=kb) if kb is not None else logs


def _with_rates(row: dict[str, Any]) -> dict[str, Any]:
    total = row["total"]
    return {
        **row,
        "hit_rate": row["cache_hits"] / total if total else None,
        "degraded_rate": row["degraded_count"] / total if total else None,
    }


def asks_summary(*, kb: KnowledgeBase | None, since: datetime) -> dict[str, Any]:
    return _with_rates(ask_logs(kb=kb, since=since).aggregate(**_aggregates()))


def asks_daily(*, kb: KnowledgeBase | None, since: datetime, until: date | None = None) -> list[dict[str, Any]]:
    """One row per day from ``since`` to today (days without asks included, as zeros)."""
    rows = (ask_logs(kb=kb, since=since).annotate(day=TruncDate("created_at")).order_by()
            .values("day").annotate(**_aggregates()))
    by_day = {row["day"]: row for row in rows}
    empty = {"total": 0, "answer": 0, "suggest": 0, "handoff": 0, "cache_hits": 0, "degraded_count": 0,
             "p50": None, "p95": None}
    first, last = timezone.localdate(since), until or timezone.localdate()
    days = [first + timedelta(days=offset) for offset in range((last - first).days + 1)]
    return [_with_rates({**empty, **by_day.get(day, {}), "day": day}) for day in days]


def top_questions(*, kb: KnowledgeBase | None, since: datetime, limit: int = 10) -> list[dict[str, Any]]:
    rows: Any = (
        ask_logs(kb=kb, since=since).order_by().values("kb__slug", "normalized")
        .annotate(count=Count("pk"), sample=Max("text"), last_at=Max("created_at"),
                  answered=Count("pk", filter=Q(decision=Decision.ANSWER)))
        .order_by("-count", "-last_at")[:limit]
    )
    return list(rows)


# --- Unanswered and low-confidence queue ------------------------------------------------------------


@dataclass
class QueueGroup:
    """Questions worded alike that the knowledge base did not answer well."""

    kb: KnowledgeBase
    text: str
    normalized: set[str]
    count: int = 0
    not_helpful: int = 0
    decisions: Counter[str] = field(default_factory=Counter)
    last_at: datetime | None = None
    wordings: Counter[str] = field(default_factory=Counter)
    question_ids: list[int] = field(default_factory=list)
    answered_since: bool = False

    @property
    def language(self) -> str:
        from knowledge.text import has_cjk

        return "zh" if has_cjk(self.text) else "en"


def _problem_questions(*, kb: KnowledgeBase | None, since: datetime, limit: int) -> list[dict[str, Any]]:
    questions = (
        Question.objects.filter(created_at__gte=since, state=Question.State.ANSWERED)
        .exclude(ticket__channel=WORKBENCH)
        .annotate(not_helpful=Count("feedback", filter=Q(feedback__helpful=False)))
        .filter(Q(decision__in=[Decision.SUGGEST, Decision.HANDOFF]) | Q(not_helpful__gt=0))
    )
    if kb is not None:
        questions = questions.filter(ticket__kb=kb)
    rows: Any = questions.order_by("-created_at").values(
        "pk", "text", "normalized", "decision", "created_at", "not_helpful", kb_id=F("ticket__kb_id"))[:limit]
    return list(rows)


def _vectors(kb: KnowledgeBase, texts: list[str]) -> np.ndarray:
    """Query embeddings of ``texts``, remembered in the cache: the queue page is reloaded often."""
    keys = {text: "kb:qvec:" + hashlib.sha256(f"{kb.embed_model}\0{text}".encode()).hexdigest() for text in texts}
    found = cache.get_many(list(keys.values()))
    missing = [text for text in texts if keys[text] not in found]
    if missing:
        fresh = get_embedder(kb.embed_model).embed_queries(missing)
        new = {keys[text]: vector.astype(np.float32).tobytes() for text, vector in zip(missing, fresh, strict=True)}
        cache.set_many(new, timeout=EMBED_CACHE_TTL)
        found.update(new)
    return np.stack([np.frombuffer(found[keys[text]], dtype=np.float32) for text in texts])


def _merge_similar(groups: list[QueueGroup]) -> list[QueueGroup]:
    """Greedy single pass, biggest groups first: a group joins the first kept group it is close to."""
    if len(groups) < 2:
        return groups
    head, tail = groups[:MAX_EMBEDDED_GROUPS], groups[MAX_EMBEDDED_GROUPS:]
    try:
        vectors = _vectors(head[0].kb, [group.text for group in head])
    except Exception:  # an embedding outage must not take the queue page down: fall back to exact wording
        return groups
    kept: list[tuple[QueueGroup, np.ndarray]] = []
    for group, vector in zip(head, vectors, strict=True):
        target = next((kept_group for kept_group, kept_vector in kept
                       if float(kept_vector @ vector) >= SIMILAR_WORDING), None)
        if target is None:
            kept.append((group, vector))
            continue
        target.normalized |= group.normalized
        target.count += group.count
        target.not_helpful += group.not_helpful
        target.decisions.update(group.decisions)
        target.wordings.update(group.wordings)
        target.question_ids += group.question_ids
        target.last_at = max(filter(None, (target.last_at, group.last_at)), default=None)
    return [group for group, _ in kept] + tail


def unanswered_queue(*, kb: KnowledgeBase | None, since: datetime, include_answered: bool = False,
                     limit: int = 500, merge_similar: bool = True) -> list[QueueGroup]:
    """Questions that ended in suggest/handoff or were rated not helpful, grouped by wording.

    A group whose wording has since been answered (a later ask decided "answer" and nobody said
    it was unhelpful) is left out unless ``include_answered``: someone already fixed it."""
    rows = _problem_questions(kb=kb, since=since, limit=limit)
    kbs = KnowledgeBase.objects.in_bulk({row["kb_id"] for row in rows})
    by_key: dict[tuple[int, str], QueueGroup] = {}
    for row in rows:
        key = (row["kb_id"], row["normalized"] or row["text"])
        group = by_key.get(key)
        if group is None:
            group = by_key[key] = QueueGroup(kb=kbs[row["kb_id"]], text=row["text"], normalized={key[1]})
        group.count += 1
        group.not_helpful += row["not_helpful"]
        group.decisions[row["decision"]] += 1
        group.wordings[row["text"]] += 1
        group.question_ids.append(row["pk"])
        group.last_at = max(filter(None, (group.last_at, row["created_at"])))
    per_kb: dict[int, list[QueueGroup]] = {}
    for (kb_id, _), group in by_key.items():
        group.text = group.wordings.most_common(1)[0][0]
        per_kb.setdefault(kb_id, []).append(group)
    groups: list[QueueGroup] = []
    for kb_groups in per_kb.values():
        kb_groups.sort(key=lambda group: (-group.count, -(group.last_at or since).timestamp()))
        groups += _merge_similar(kb_groups) if merge_similar else kb_groups
    _mark_answered_since(groups, since=since)
    if not include_answered:
        groups = [group for group in groups if not group.answered_since]
    return sorted(groups, key=lambda group: (-group.count, -(group.last_at or since).timestamp()))


def _mark_answered_since(groups: list[QueueGroup], *, since: datetime) -> None:
    if not groups:
        return
    answered = (
        AskLog.objects.filter(created_at__gte=since, decision=Decision.ANSWER,
                              kb_id__in={group.kb.pk for group in groups},
                              normalized__in={text for group in groups for text in group.normalized})
        .exclude(source=WORKBENCH)
        .exclude(question__feedback__helpful=False)
        .order_by().values("kb_id", "normalized").annotate(last=Max("created_at"))
    )
    last_answer = {(row["kb_id"], row["normalized"]): row["last"] for row in answered}
    for group in groups:
        latest = max((last_answer[(group.kb.pk, text)] for text in group.normalized
                      if (group.kb.pk, text) in last_answer), default=None)
        group.answered_since = latest is not None and group.last_at is not None and latest > group.last_at


# --- Per-entry usage ---------------------------------------------------------------------------------


@dataclass
class EntryUsage:
    entry: FaqEntry
    top: int = 0  # times it was the top result, whatever the decision
    answered: int = 0  # times it was given as the answer
    helpful: int = 0
    not_helpful: int = 0
    chosen: int = 0  # times a customer or agent picked it over the top result
    sent: int = 0  # times an agent sent it to a customer, as is or edited: use, not a rating

    @property
    def rated(self) -> int:
        return self.helpful + self.not_helpful

    @property
    def helpful_rate(self) -> float | None:
        return self.helpful / self.rated if self.rated else None

    @property
    def used(self) -> bool:
        return bool(self.top or self.chosen or self.sent)


def entry_usage(*, kb: KnowledgeBase, since: datetime) -> list[EntryUsage]:
    """Every live entry of ``kb`` with how it served since ``since``; three grouped queries, not one per entry."""
    entries = FaqEntry.objects.filter(kb=kb).exclude(status=FaqStatus.ARCHIVED).only(
        "pk", "question", "status", "language", "category", "kb_id").order_by("pk")
    usage = {entry.pk: EntryUsage(entry=entry) for entry in entries}
    tops: Any = (ask_logs(kb=kb, since=since).filter(top_entry__isnull=False).order_by().values("top_entry_id")
            .annotate(top=Count("pk"), answered=Count("pk", filter=Q(decision=Decision.ANSWER))))
    for row in tops:
        if row["top_entry_id"] in usage:
            usage[row["top_entry_id"]].top = row["top"]
            usage[row["top_entry_id"]].answered = row["answered"]
    # Customers' ratings of the answer the question was given (its ask log's top entry).
    rated: Any = (Feedback.objects.filter(created_at__gte=since, question__ticket__kb=kb,
                                          source=Feedback.Source.CUSTOMER,
                                          question__logs__top_entry__isnull=False, helpful__isnull=False)
             .exclude(question__ticket__channel=WORKBENCH)
             .order_by().values(entry_id=F("question__logs__top_entry_id"))
             .annotate(yes=Count("pk", filter=Q(helpful=True)), no=Count("pk", filter=Q(helpful=False))))
    for row in rated:
        if row["entry_id"] in usage:
            usage[row["entry_id"]].helpful = row["yes"]
            usage[row["entry_id"]].not_helpful = row["no"]
    chosen: Any = (Feedback.objects.filter(created_at__gte=since, chosen_entry__kb=kb)
              .exclude(chosen_entry_id=F("question__logs__top_entry_id"))
              .order_by().values("chosen_entry_id").annotate(n=Count("pk")))
    for row in chosen:
        if row["chosen_entry_id"] in usage:
            usage[row["chosen_entry_id"]].chosen = row["n"]
    sent: Any = (Message.objects.filter(created_at__gte=since, kind=Message.Kind.AGENT, entry__kb=kb)
                 .order_by().values("entry_id").annotate(n=Count("pk")))
    for row in sent:
        if row["entry_id"] in usage:
            usage[row["entry_id"]].sent = row["n"]
    return list(usage.values())


def faq_rerank_documents_published() -> Iterator[str]:
    """Every published entry as the ask pipeline sends it to the reranker: what a starting rerank
    worker warms up with (registered in ChatConfig.ready)."""
    entries = FaqEntry.objects.filter(status=FaqStatus.PUBLISHED).only("question", "summary", "answer")
    for entry in entries.order_by("kb_id", "pk").iterator(chunk_size=500):
        yield faq_rerank_document(entry)
