"""Speed of the BM25 full-text stage at 100,000 entries, next to the ts_rank_cd stage it replaced, in one run.

A throwaway knowledge base (bench/_stack.py) gets N entries built from real support text: half Chinese
(ATEC questions, two joined as a question and a third as its summary), half English (StackFAQ
questions with an answer of another thread). The product's postings and statistics are built by
``knowledge.bm25.knowledge_base_postings_rebuild``; the old stage runs on the same ``search_vector``
column through a GIN index, as shipped before. Each query (ATEC and StackFAQ paraphrases) runs once
per stage, alternating, so both see the same machine; p50 / p95 and their ratio are printed.

    .venv/bin/python bench/fulltext_speed.py [--entries 100000] [--queries 400]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kbservice.settings")

from _stack import bench_stack, percentile  # noqa: E402

RUN = contextlib.ExitStack()
RUN.enter_context(bench_stack("fulltext"))

from django.db import connection  # noqa: E402
from tqdm import tqdm  # noqa: E402

from knowledge import bm25  # noqa: E402
from knowledge import text as kb_text  # noqa: E402
from knowledge.selectors import faq_fulltext_search  # noqa: E402
from knowledge.services import knowledge_base_create  # noqa: E402

SHARED = ROOT.parent / "shared" / "eval"
K = 50  # = KnowledgeBase.recall_k

OLD_STAGE = (
    "WITH q AS (SELECT NULLIF(replace(plainto_tsquery('english', %s)::text, ' & ', ' | '), '')::tsquery AS tsq) "
    "SELECT e.id, ts_rank_cd(e.search_vector, q.tsq, 32) AS rank FROM knowledge_faqentry e, q "
    "WHERE q.tsq IS NOT NULL AND e.kb_id = %s AND e.status = 'published' AND e.search_vector @@ q.tsq "
    "ORDER BY rank DESC, e.id LIMIT %s"
)


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.open(encoding="utf-8")]


def build(kb_id: int, count: int, rng: random.Random) -> None:
    zh = [row["question"] for row in _jsonl(SHARED / "atec" / "faq.jsonl")]
    en = _jsonl(SHARED / "stackfaq" / "faq.jsonl")
    with connection.cursor() as cursor:
        cursor.execute("CREATE TEMP TABLE staged (question text, summary text, answer text, language text, "
                       "q text, s text, a text)")
        with cursor.copy("COPY staged FROM STDIN") as copy:
            for i in tqdm(range(count), desc="entries", mininterval=5):
                if i % 2:
                    question, summary, answer, language = "，".join(rng.sample(zh, 2)), rng.choice(zh), "", "zh"
                else:
                    row, other = rng.choice(en), rng.choice(en)
                    question, summary, answer, language = row["question"], "", other["answer"], "en"
                copy.write_row((question, summary, answer, language, kb_text.segment(question),
                                kb_text.segment(summary), kb_text.segment(answer)))
        started = time.perf_counter()
        cursor.execute(
            "INSERT INTO knowledge_faqentry (kb_id, question, similar_questions, answer, summary, tags, category, "
            "language, status, version, content_hash, created_at, updated_at, search_vector) "
            "SELECT %s, question, '{}', answer, summary, '{}', '', language, 'published', 1, '', now(), now(), "
            "setweight(to_tsvector('english', q), 'A') || setweight(to_tsvector('english', s), 'B') || "
            "setweight(to_tsvector('english', a), 'D') FROM staged", [kb_id])
        print(f"entries and their tsvectors: {time.perf_counter() - started:.1f}s")
        started = time.perf_counter()
        bm25.knowledge_base_postings_rebuild(kb_id=kb_id)
        print(f"BM25 postings and statistics from scratch: {time.perf_counter() - started:.1f}s")
        started = time.perf_counter()
        cursor.execute("CREATE INDEX old_gin ON knowledge_faqentry USING gin (search_vector)")
        print(f"GIN index of the old stage: {time.perf_counter() - started:.1f}s")
        cursor.execute("VACUUM ANALYZE knowledge_faqentry")
        cursor.execute("VACUUM ANALYZE knowledge_faqposting")
        cursor.execute("SELECT count(*) FROM knowledge_faqposting WHERE kb_id = %s", [kb_id])
        print(f"postings: {cursor.fetchone()[0]:,}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=400)
    args = parser.parse_args()
    rng = random.Random(7)
    kb = knowledge_base_create(slug="speed")
    build(kb.pk, args.entries, rng)
    queries = [row["query"] for row in _jsonl(SHARED / "atec" / "queries.jsonl")[: args.queries // 2]]
    queries += [row["query"] for row in _jsonl(SHARED / "stackfaq" / "queries.jsonl")[: args.queries // 2]]
    rng.shuffle(queries)
    timings: dict[str, list[float]] = {"bm25": [], "ts_rank_cd": []}
    for query in queries[:20]:  # warm both: caches and plans
        faq_fulltext_search(kb=kb, query=query, k=K)
    with connection.cursor() as cursor:
        for query in queries[:20]:
            cursor.execute(OLD_STAGE, [kb_text.segment(query), kb.pk, K])
        for query in tqdm(queries, desc="queries", mininterval=5):
            started = time.perf_counter()
            faq_fulltext_search(kb=kb, query=query, k=K)
            timings["bm25"].append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            cursor.execute(OLD_STAGE, [kb_text.segment(query), kb.pk, K])
            cursor.fetchall()
            timings["ts_rank_cd"].append((time.perf_counter() - started) * 1000)
    print(f"\n{args.entries:,} entries, {len(queries)} queries (half Chinese, half English), k={K}")
    for name, values in timings.items():
        print(f"  {name:<11} p50 {percentile(values, 50):7.1f} ms   p95 {percentile(values, 95):7.1f} ms")
    for q in (50, 95):
        ratio = percentile(timings["bm25"], q) / percentile(timings["ts_rank_cd"], q)
        print(f"  bm25 / ts_rank_cd at p{q}: {ratio:.2f}")


if __name__ == "__main__":
    try:
        main()
    finally:
        RUN.close()
