"""Reads over the knowledge base: search candidates and embedding progress."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.db import connection, transaction
from django.db.models import F, Q, QuerySet

from knowledge import text as kb_text
from knowledge.embedding import get_embedder
from knowledge.models import Calibration, FaqEmbedding, FaqEntry, FaqStatus, KnowledgeBase
from knowledge.vector_index import vector_expression

# Candidates the HNSW scan examines (>= k). bench/recall.py, 100k entries, k=50: ef 100 → recall@50
# 0.915, ef 200 → 0.971 at a few ms more per query.
HNSW_EF_SEARCH = 200


@dataclass(frozen=True)
class Hit:
    entry_id: int
    score: float


@dataclass(frozen=True)
class SearchFilters:
    tags: tuple[str, ...] = ()
    category: str = ""
    language: str = ""

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SearchFilters:
        return cls(tags=tuple(data.get("tags") or ()), category=data.get("category") or "",
                   language=data.get("language") or "")

    def as_dict(self) -> dict[str, Any]:
        return {"tags": list(self.tags), "category": self.category, "language": self.language}

    def sql(self) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        if self.tags:
            clauses.append("e.tags && %s")
            params.append(list(self.tags))
        if self.category:
            clauses.append("e.category = %s")
            params.append(self.category)
        if self.language:
            clauses.append("e.language = %s")
            params.append(self.language)
        return "".join(f" AND {clause}" for clause in clauses), params


def _with_excluded(filter_sql: tuple[str, list[Any]], exclude_entry_ids: Sequence[int]) -> tuple[str, list[Any]]:
    """Leave entries out of a search: how evaluation and calibration ask a question whose answer is
    missing from the knowledge base (a no-answer question) without editing the base."""
    if not exclude_entry_ids:
        return filter_sql
    sql, params = filter_sql
    return f"{sql} AND e.id <> ALL(%s)", [*params, list(exclude_entry_ids)]


def faq_entries_published(*, kb: KnowledgeBase) -> QuerySet[FaqEntry]:
    return FaqEntry.objects.filter(kb=kb, status=FaqStatus.PUBLISHED)


def faq_vector_search(
    *, kb: KnowledgeBase, query: str, k: int, filters: SearchFilters | None = None, exact: bool = False,
    exclude_entry_ids: Sequence[int] = (),
) -> list[Hit]:
    """Published entries nearest to ``query`` by cosine similarity (HNSW unless ``exact``)."""
    embedder = get_embedder(kb.embed_model)
    vector = embedder.embed_queries([query])[0].tolist()
    expression = vector_expression(kb.embed_dimensions)
    filter_sql, filter_params = _with_excluded((filters or SearchFilters()).sql(), exclude_entry_ids)
    sql = (
        f"SELECT m.entry_id, 1 - ({expression} <=> %s::vector({kb.embed_dimensions})) AS similarity "
        "FROM knowledge_faqembedding m JOIN knowledge_faqentry e ON e.id = m.entry_id "
        "WHERE m.kb_id = %s AND m.model = %s AND m.dimensions = %s AND e.status = 'published'"
        f"{filter_sql} ORDER BY {expression} <=> %s::vector({kb.embed_dimensions}) LIMIT %s"
    )
    params = [vector, kb.pk, kb.embed_model, kb.embed_dimensions, *filter_params, vector, k]
    with transaction.atomic(), connection.cursor() as cursor:
        # Filtered HNSW scans keep going until k rows pass the filter (pgvector >= 0.8).
        cursor.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
        cursor.execute("SET LOCAL hnsw.ef_search = %s", [max(HNSW_EF_SEARCH, k)])
        if exact:
            cursor.execute("SET LOCAL enable_indexscan = off")
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    # relaxed_order may return near-ties slightly out of order
    return sorted((Hit(entry_id=row[0], score=float(row[1])) for row in rows), key=lambda hit: -hit.score)


def faq_fulltext_search(
    *, kb: KnowledgeBase, query: str, k: int, filters: SearchFilters | None = None,
    exclude_entry_ids: Sequence[int] = (),
) -> list[Hit]:
    """Published entries sharing words with ``query``, ranked by ts_rank_cd.

    Any word may match (OR): customers' questions are colloquial and rarely contain every word
    of the entry, so AND semantics would find nothing for most of them."""
    segmented = kb_text.segment(query)
    filter_sql, filter_params = _with_excluded((filters or SearchFilters()).sql(), exclude_entry_ids)
    sql = (
        "WITH q AS (SELECT NULLIF(replace(plainto_tsquery('english', %s)::text, ' & ', ' | '), '')::tsquery AS tsq) "
        "SELECT e.id, ts_rank_cd(e.search_vector, q.tsq, 32) AS rank FROM knowledge_faqentry e, q "
        "WHERE q.tsq IS NOT NULL AND e.kb_id = %s AND e.status = 'published' AND e.search_vector @@ q.tsq"
        f"{filter_sql} ORDER BY rank DESC, e.id LIMIT %s"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [segmented, kb.pk, *filter_params, k])
        return [Hit(entry_id=row[0], score=float(row[1])) for row in cursor.fetchall()]


@dataclass(frozen=True)
class EmbeddingStatus:
    model: str
    entries: int
    embedded: int

    @property
    def complete(self) -> bool:
        return self.embedded >= self.entries


def knowledge_base_embedding_status(*, kb: KnowledgeBase, model: str | None = None) -> EmbeddingStatus:
    """How many entries have a vector of ``model`` (default: the active one) matching their text."""
    name = model or kb.embed_model
    entries = FaqEntry.objects.filter(kb=kb).count()
    embedded = FaqEmbedding.objects.filter(
        kb=kb, model=name, entry__content_hash=F("content_hash")
    ).count()
    return EmbeddingStatus(model=name, entries=entries, embedded=embedded)


def faq_entries_needing_embedding(*, kb: KnowledgeBase, model: str) -> QuerySet[FaqEntry]:
    fresh = FaqEmbedding.objects.filter(kb=kb, model=model, entry__content_hash=F("content_hash"))
    return FaqEntry.objects.filter(kb=kb).exclude(Q(pk__in=fresh.values("entry_id"))).order_by("pk")


@dataclass(frozen=True)
class Candidate:
    entry: FaqEntry
    vector: Hit | None
    fulltext: Hit | None
    fused: float
    vector_rank: int | None
    fulltext_rank: int | None


@dataclass(frozen=True)
class Recall:
    candidates: list[Candidate]
    vector_hits: list[Hit]
    fulltext_hits: list[Hit]
    language: str
    timings_ms: dict[str, float]


def query_language(query: str) -> str:
    return "zh" if kb_text.has_cjk(query) else "en"


def faq_recall(
    *, kb: KnowledgeBase, query: str, filters: SearchFilters | None = None, recall_k: int | None = None,
    limit: int | None = None, exclude_entry_ids: Sequence[int] = (),
) -> Recall:
    """Hybrid recall: HNSW top-k ∪ full-text top-k, fused with the method measured for the
    query's language, cut to ``limit`` (default: the knowledge base's rerank_k)."""
    from knowledge.fusion import fuse

    k = recall_k or kb.recall_k
    timings: dict[str, float] = {}
    started = time.perf_counter()
    vector_hits = faq_vector_search(kb=kb, query=query, k=k, filters=filters, exclude_entry_ids=exclude_entry_ids)
    timings["vector"] = round((time.perf_counter() - started) * 1000, 2)
    started = time.perf_counter()
    fulltext_hits = faq_fulltext_search(kb=kb, query=query, k=k, filters=filters,
                                        exclude_entry_ids=exclude_entry_ids)
    timings["fulltext"] = round((time.perf_counter() - started) * 1000, 2)
    language = query_language(query)
    fused = fuse(vector_hits, fulltext_hits, language=language, limit=limit or kb.rerank_k)
    entries = FaqEntry.objects.in_bulk([hit.entry_id for hit in fused])
    vector_by_id = {hit.entry_id: (rank, hit) for rank, hit in enumerate(vector_hits, start=1)}
    fulltext_by_id = {hit.entry_id: (rank, hit) for rank, hit in enumerate(fulltext_hits, start=1)}
    candidates = []
    for hit in fused:
        if hit.entry_id not in entries:
            continue  # deleted between the search and this read
        vector_rank, vector_hit = vector_by_id.get(hit.entry_id, (None, None))
        fulltext_rank, fulltext_hit = fulltext_by_id.get(hit.entry_id, (None, None))
        candidates.append(Candidate(entry=entries[hit.entry_id], vector=vector_hit, fulltext=fulltext_hit,
                                    fused=hit.score, vector_rank=vector_rank, fulltext_rank=fulltext_rank))
    return Recall(candidates=candidates, vector_hits=vector_hits, fulltext_hits=fulltext_hits, language=language,
                  timings_ms=timings)


# Share of the published entries, counted when the calibration was made, changed since: past it the
# admin says the calibration is stale (it keeps applying until refreshed).
CALIBRATION_STALE_SHARE = 0.1


def calibration_content_changed(*, calibration: Calibration) -> float:
    """Share of the entries published at calibration time that were edited, added or unpublished since."""
    changed = FaqEntry.objects.filter(kb_id=calibration.kb_id, updated_at__gt=calibration.created_at).count()
    return changed / max(1, calibration.published_entries)


@dataclass(frozen=True)
class CalibrationState:
    calibration: Calibration | None
    # "calibrated"; "uncalibrated" (never calibrated); "not_applicable" (measured another engine, model or
    # embedding model than the one now answering); "unknown" (no rerank worker reports what it runs)
    status: str
    running: tuple[str, str] | None  # engine, model of the rerank workers
    changed_share: float  # content changed since the calibration
    stale: bool


def knowledge_base_calibration_state(*, kb: KnowledgeBase, running: tuple[str, str] | None) -> CalibrationState:
    """Whether the base's calibration applies to the reranker now running (as its workers report it)."""
    calibration = kb.calibration
    if calibration is None:
        return CalibrationState(calibration=None, status="uncalibrated", running=running, changed_share=0.0,
                                stale=False)
    changed = calibration_content_changed(calibration=calibration)
    if running is None:
        status = "unknown"
    elif calibration.applies_to(engine=running[0], model=running[1], embed_model=kb.embed_model):
        status = "calibrated"
    else:
        status = "not_applicable"
    return CalibrationState(calibration=calibration, status=status, running=running, changed_share=changed,
                            stale=changed > CALIBRATION_STALE_SHARE)
