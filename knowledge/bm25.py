"""BM25 full-text scoring kept in Postgres: postings and term statistics per knowledge base and language.

No BM25 extension installs here as a package (ParadeDB pg_search, VectorChord-bm25 and pg_textsearch
are built from source or shipped as GitHub release binaries, for other Postgres builds than the
embedded one), so the index is three plain tables (``FaqPosting``, ``FaqTermStat``,
``FaqCorpusStat``) written in the same transaction as the entry. Every writer of a knowledge base's
entries already holds that knowledge base's row lock (the content-generation bump comes first), so
the statistics of one knowledge base are updated by one transaction at a time: concurrent edits
neither deadlock on them nor lose an update, and a rolled-back write rolls them back too.

Terms are what the entry's ``search_vector`` holds: Chinese as single characters plus character
bigrams (``text.segment``), other text as Postgres' English stemmed words. A term's frequency is
weighted by the field it occurs in (BM25F with one length per entry)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from django.db import connection, transaction

from knowledge import text as kb_text

# Field labels of the tsvector (setweight): A question and similar questions, B summary, D answer.
QUESTION, SUMMARY, ANSWER = "A", "B", "D"
# Chosen out of fold by bench/retrieval_choices.py (see the README).
FIELD_WEIGHTS = {QUESTION: 1.0, SUMMARY: 1.0, "C": 0.0, ANSWER: 0.3}
K1 = 1.2
B = 0.5


def search_vector_sql(*, question: str, similar_questions: list[str], summary: str, answer: str,
                      ) -> tuple[str, list[Any]]:
    """The SQL expression (and its parameters) of an entry's weighted tsvector."""
    weighted = [(QUESTION, question), *((QUESTION, phrasing) for phrasing in similar_questions),
                (SUMMARY, summary), (ANSWER, answer)]
    sql = " || ".join("setweight(to_tsvector('english', %s), %s)" for _ in weighted)
    params: list[Any] = []
    for weight, value in weighted:
        params += [kb_text.segment(value), weight]
    return sql, params


def _weighted_frequency_sql() -> tuple[str, list[float]]:
    labels = sorted(FIELD_WEIGHTS)
    cases = " ".join("WHEN %s THEN %s::float8" for _ in labels)
    params: list[Any] = []
    for label in labels:
        params += [label, FIELD_WEIGHTS[label]]
    return f"(SELECT sum(CASE w {cases} ELSE 0 END) FROM unnest(u.weights) w)", params


def _insert_postings_sql(entries_sql: str) -> str:
    """Postings of the entries ``entries_sql`` selects (id, kb_id, language, search_vector), counted into
    the statistics. Parameters: those of ``entries_sql``, then ``_weighted_frequency_sql``'s."""
    frequency_sql, _ = _weighted_frequency_sql()
    return (
        f"WITH e AS ({entries_sql}), "
        f"terms AS (SELECT e.id, e.kb_id, e.language, u.lexeme AS term, {frequency_sql} AS frequency "
        "FROM e, unnest(e.search_vector) u), "
        "kept AS (SELECT *, sum(frequency) OVER (PARTITION BY id) AS entry_length FROM terms WHERE frequency > 0), "
        "added AS (INSERT INTO knowledge_faqposting (entry_id, kb_id, language, term, frequency, entry_length) "
        "SELECT id, kb_id, language, term, frequency, entry_length FROM kept "
        "RETURNING entry_id, kb_id, language, term, entry_length), "
        "counted AS (INSERT INTO knowledge_faqtermstat AS t (kb_id, language, term, entries) "
        "SELECT kb_id, language, term, count(*) FROM added GROUP BY kb_id, language, term ORDER BY term "
        "ON CONFLICT (kb_id, language, term) DO UPDATE SET entries = t.entries + excluded.entries RETURNING 1) "
        "INSERT INTO knowledge_faqcorpusstat AS c (kb_id, language, entries, total_length) "
        "SELECT kb_id, language, count(*), sum(entry_length) FROM "
        "(SELECT DISTINCT entry_id, kb_id, language, entry_length FROM added) lengths GROUP BY kb_id, language "
        "ON CONFLICT (kb_id, language) DO UPDATE SET entries = c.entries + excluded.entries, "
        "total_length = c.total_length + excluded.total_length"
    )


# A write of this many entries changes the BM25 tables more than the planner's statistics know until
# autovacuum's next look (up to a minute later); meanwhile it plans the full-text query the slow way
# (1,500 ATEC entries just imported: 22 ms a question instead of 5 ms).
ANALYZE_AFTER_ENTRIES = 200


def statistics_analyze() -> None:
    """Refresh the planner's statistics of the BM25 tables (run outside the write's transaction)."""
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE knowledge_faqposting, knowledge_faqtermstat, knowledge_faqcorpusstat")


# Entries whose postings are due, inside ``faq_postings_batched()`` (None outside it).
_batch: ContextVar[list[int] | None] = ContextVar("postings_batch", default=None)

_LANGUAGE_SQL = ("CASE WHEN language <> '' THEN language "
                 "WHEN question ~ '[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]' THEN 'zh' ELSE 'en' END")


def faq_entry_postings_refresh(*, entry_id: int) -> None:
    """Replace an entry's postings by those of its current ``search_vector`` (none unless published),
    moving the statistics with them. The caller holds the entry's knowledge base row lock."""
    batch = _batch.get()
    if batch is not None:
        batch.append(entry_id)
    else:
        _refresh([entry_id])


@contextmanager
def faq_postings_batched() -> Iterator[None]:
    """Refresh the postings of the entries written inside in two statements at the end, not two per
    entry: thousands of updates of one statistics row in one transaction leave a chain of row
    versions that every later update walks, which makes a large import quadratic. Call inside the
    writes' transaction; a block left by an exception refreshes nothing (it rolls back)."""
    if _batch.get() is not None:
        yield
        return
    entry_ids: list[int] = []
    token = _batch.set(entry_ids)
    try:
        yield
    finally:
        _batch.reset(token)
    if entry_ids:
        _refresh(list(dict.fromkeys(entry_ids)))
        if len(entry_ids) >= ANALYZE_AFTER_ENTRIES:
            transaction.on_commit(statistics_analyze)


def _refresh(entry_ids: list[int]) -> None:
    with connection.cursor() as cursor:
        _remove(cursor, "entry_id = ANY(%s)", [entry_ids])
        _, frequency_params = _weighted_frequency_sql()
        cursor.execute(
            _insert_postings_sql(f"SELECT id, kb_id, {_LANGUAGE_SQL} AS language, search_vector "
                                 "FROM knowledge_faqentry WHERE id = ANY(%s) AND status = 'published'"),
            [entry_ids, *frequency_params],
        )


def faq_entry_postings_remove(*, entry_id: int) -> None:
    """Before an entry is deleted: take its postings out of the statistics."""
    with connection.cursor() as cursor:
        _remove(cursor, "entry_id = %s", [entry_id])


def _remove(cursor: Any, where: str, params: list[Any]) -> None:
    cursor.execute(
        f"WITH gone AS (DELETE FROM knowledge_faqposting WHERE {where} "
        "RETURNING entry_id, kb_id, language, term, entry_length), "
        "uncounted AS (UPDATE knowledge_faqtermstat t SET entries = t.entries - g.n "
        "FROM (SELECT kb_id, language, term, count(*) AS n FROM gone GROUP BY kb_id, language, term) g "
        "WHERE t.kb_id = g.kb_id AND t.language = g.language AND t.term = g.term RETURNING 1) "
        "UPDATE knowledge_faqcorpusstat c SET entries = c.entries - g.n, total_length = c.total_length - g.length "
        "FROM (SELECT kb_id, language, count(*) AS n, sum(entry_length) AS length "
        "FROM (SELECT DISTINCT entry_id, kb_id, language, entry_length FROM gone) lengths "
        "GROUP BY kb_id, language) g WHERE c.kb_id = g.kb_id AND c.language = g.language",
        params,
    )


def knowledge_base_postings_rebuild(*, kb_id: int) -> None:
    """Every posting and statistic of a knowledge base from scratch (after a change of weights, and in
    migrations). One statement for all entries: fast enough for a 100,000-entry base."""
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM knowledge_faqposting WHERE kb_id = %s", [kb_id])
        cursor.execute("DELETE FROM knowledge_faqtermstat WHERE kb_id = %s", [kb_id])
        cursor.execute("DELETE FROM knowledge_faqcorpusstat WHERE kb_id = %s", [kb_id])
        _, frequency_params = _weighted_frequency_sql()
        cursor.execute(
            _insert_postings_sql(f"SELECT id, kb_id, {_LANGUAGE_SQL} AS language, search_vector "
                                 "FROM knowledge_faqentry WHERE kb_id = %s AND status = 'published'"),
            [kb_id, *frequency_params],
        )
    transaction.on_commit(statistics_analyze)
