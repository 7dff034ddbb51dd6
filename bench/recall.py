"""HNSW vs exact vector search at scale: latency side by side, and HNSW recall@k against the exact top-k.

Brings up its own Postgres+pgvector and Redis (bench/_stack.py), loads N synthetic entries into one
knowledge base -- random unit vectors with a fixed seed, written with COPY (no embedding model) and
tagged with a model name / dimensions / content hash exactly as ``faq_entries_embed`` would tag
them -- drops the migration's (empty) HNSW index before the load and builds it afterwards with the
product's ``create_index_sql`` (build time printed), then runs Q query vectors (perturbed copies of
stored vectors and fresh random ones) through the product's ``faq_vector_search``, HNSW and
``exact=True`` alternately, query by query. ``faq_vector_search`` embeds its text argument: here its
embedder is swapped for one that returns the prepared query vector, so the SQL, the SET LOCAL
hnsw.* settings and the result handling measured are the product's own. EXPLAIN of both paths
(the very statement the product executes, in its transaction) checks that only the HNSW path uses
the index.

    .venv/bin/python bench/recall.py [--entries 100000] [--queries 200] [--dimensions 384]
"""

from __future__ import annotations

import argparse
import io
import re
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from unittest import mock

import numpy as np
from _stack import bench_stack, log, percentile
from tqdm import tqdm

CHUNK = 5000
WARMUP = 10
# Perturbed queries: q = x + noise with |noise| ~ PERTURBATION, so cos(q, x) ~ 1 / sqrt(1 + PERTURBATION**2).
PERTURBATION = 0.5
VECTOR_LITERAL = re.compile(r"'\[[^\]]*\]'")


@dataclass
class QueryVectors:
    """Maps the query text handed to faq_vector_search to the vector its stub embedder returns."""

    dimensions: int
    vectors: dict[str, np.ndarray] = field(default_factory=dict)
    name: str = ""
    batches_exactly: bool = True

    def embed_queries(self, texts: list[str]) -> np.ndarray:
        return np.stack([self.vectors[text] for text in texts])

    def embed_passages(self, texts: list[str]) -> np.ndarray:
        raise NotImplementedError("the benchmark never embeds passages")


@dataclass
class Plans:
    """EXPLAIN output of the product's vector-search statement, captured in its own transaction."""

    lines: list[str] = field(default_factory=list)


@contextmanager
def explain_vector_search(plans: Plans) -> Iterator[None]:
    """While active, the product's vector-search SELECT is EXPLAINed (then run as usual)."""
    from django.db import connection

    def wrapper(execute: Callable[..., Any], sql: str, params: Any, many: bool, context: dict[str, Any]) -> Any:
        if sql.startswith("SELECT m.entry_id"):
            execute("EXPLAIN " + sql, params, many, context)
            plans.lines = [row[0] for row in context["cursor"].fetchall()]
        return execute(sql, params, many, context)

    with connection.execute_wrapper(wrapper):
        yield


def short(plan_line: str) -> str:
    """A plan line with the query vector's literal elided."""
    return VECTOR_LITERAL.sub("'[…]'", plan_line)


def normalized(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


@dataclass
class Distribution:
    """Unit vectors: uniform on the sphere (``intrinsic == 0``), or near a random ``intrinsic``-dimensional
    subspace, a crude model of real text embeddings, whose intrinsic dimension is far below their width."""

    dimensions: int
    intrinsic: int
    seed: int
    basis: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        rng = np.random.default_rng(self.seed + 100)
        self.basis = rng.standard_normal((max(self.intrinsic, 1), self.dimensions)).astype(np.float32)

    def sample(self, rng: np.random.Generator, count: int) -> np.ndarray:
        noise = rng.standard_normal((count, self.dimensions), dtype=np.float32)
        if not self.intrinsic:
            return normalized(noise)
        latent = rng.standard_normal((count, self.intrinsic), dtype=np.float32)
        # Off-subspace noise of a tenth of the signal's norm.
        signal = normalized(latent @ self.basis)
        return normalized(signal + noise * (0.1 / self.dimensions ** 0.5))

    def describe(self) -> str:
        return ("uniform random unit vectors" if not self.intrinsic
                else f"unit vectors near a random {self.intrinsic}-dim subspace")


def vector_text(rows: np.ndarray) -> list[str]:
    buffer = io.StringIO()
    np.savetxt(buffer, rows, fmt="%.7g", delimiter=",")
    return [f"[{line}]" for line in buffer.getvalue().splitlines()]


def load(kb_id: int, model: str, vectors: np.ndarray) -> dict[str, float]:
    """COPY the entries, then their vectors; returns seconds per phase."""
    from django.db import connection
    from django.utils import timezone

    from knowledge import text as kb_text

    count, dimensions = vectors.shape
    timings: dict[str, float] = {}
    now = timezone.now().isoformat()
    hashes: list[str] = []
    started = time.perf_counter()
    columns = ("kb_id, external_id, question, answer, summary, tags, category, language, status, version, "
               "content_hash, created_at, updated_at")
    with connection.cursor() as cursor, cursor.copy(f"COPY knowledge_faqentry ({columns}) FROM STDIN") as copy:
        for i in tqdm(range(count), desc="COPY entries", unit="row", unit_scale=True, mininterval=2):
            question, answer = f"Synthetic question {i}", f"Synthetic answer {i}"
            content_hash = kb_text.content_hash(kb_text.embedding_text(question=question, summary="", answer=answer))
            hashes.append(content_hash)
            copy.write_row((kb_id, f"bench-{i}", question, answer, "", [], "", "en", "published", 1,
                            content_hash, now, now))
    timings["COPY entries"] = time.perf_counter() - started
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute("SELECT external_id, id FROM knowledge_faqentry WHERE kb_id = %s", [kb_id])
        ids = {external_id: entry_id for external_id, entry_id in cursor.fetchall()}
    columns = "entry_id, kb_id, phrasing, model, dimensions, content_hash, vector, created_at"
    with (
        connection.cursor() as cursor,
        cursor.copy(f"COPY knowledge_faqembedding ({columns}) FROM STDIN") as copy,
        tqdm(total=count, desc="COPY vectors", unit="row", unit_scale=True, mininterval=2) as bar,
    ):
        for start in range(0, count, CHUNK):
            texts = vector_text(vectors[start:start + CHUNK])
            for offset, text in enumerate(texts):
                i = start + offset
                copy.write_row((ids[f"bench-{i}"], kb_id, 0, model, dimensions, hashes[i], text, now))
            bar.update(len(texts))
    timings["COPY vectors"] = time.perf_counter() - started
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE knowledge_faqentry")
        cursor.execute("ANALYZE knowledge_faqembedding")
    timings["ANALYZE"] = time.perf_counter() - started
    return timings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--dimensions", type=int, default=384)
    parser.add_argument("--k", type=int, default=50, help="top-k compared (default 50 = KnowledgeBase.recall_k)")
    parser.add_argument("--seed", type=int, default=20240601)
    parser.add_argument("--intrinsic-dim", type=int, default=0,
                        help="0: uniform on the sphere (default); R: vectors near a random R-dim subspace")
    parser.add_argument("--ef-sweep", default="200,400,800",
                        help="diagnostic: HNSW recall at these hnsw.ef_search values too ('' to skip)")
    parser.add_argument("--sweep-queries", type=int, default=50, help="queries per --ef-sweep value")
    parser.add_argument("--maintenance-work-mem", default="1GB",
                        help="for the index build (Postgres' default 64MB spills the graph of 100k vectors)")
    parser.add_argument("--max-seconds", type=float, default=300, help="cap on the query phase")
    parser.add_argument("--keep", action="store_true", help="keep the stack's logs under var/bench/")
    args = parser.parse_args()
    started_run = time.perf_counter()
    phases: dict[str, float] = {}
    with bench_stack("recall", keep=args.keep):
        from django.db import connection

        from knowledge import selectors
        from knowledge.models import FaqEmbedding, FaqEntry, KnowledgeBase
        from knowledge.selectors import faq_vector_search, knowledge_base_embedding_status
        from knowledge.vector_index import create_index_sql, index_name

        dims, k = args.dimensions, args.k
        model = f"bench-random-{dims}"
        kb = KnowledgeBase.objects.create(slug="bench-recall", name="bench recall", languages=["en"],
                                          embed_model=model, embed_dimensions=dims, recall_k=k)
        with connection.cursor() as cursor:
            cursor.execute(f"DROP INDEX IF EXISTS {index_name(dims)}")

        started = time.perf_counter()
        rng = np.random.default_rng(args.seed)
        distribution = Distribution(dimensions=dims, intrinsic=args.intrinsic_dim, seed=args.seed)
        stored = distribution.sample(rng, args.entries)
        phases["generate vectors"] = time.perf_counter() - started
        phases.update(load(kb.pk, model, stored))
        status = knowledge_base_embedding_status(kb=kb)
        log(f"loaded {status.entries} entries, {status.embedded} with a fresh {model} vector "
            f"({FaqEmbedding.objects.filter(kb=kb, dimensions=dims).count()} rows of dimension {dims})")
        if not status.complete:
            log("FAILED: content hashes of entries and vectors disagree")
            return 1

        started = time.perf_counter()
        with connection.cursor() as cursor:
            cursor.execute(f"SET maintenance_work_mem = '{args.maintenance_work_mem}'")
            cursor.execute(create_index_sql(dims))
            cursor.execute("RESET maintenance_work_mem")
            cursor.execute("SHOW max_parallel_maintenance_workers")
            parallel = cursor.fetchone()[0]
            cursor.execute("SELECT pg_size_pretty(pg_relation_size(%s::regclass))", [index_name(dims)])
            index_size = cursor.fetchone()[0]
        phases["HNSW index build"] = time.perf_counter() - started
        log(f"built {index_name(dims)} in {phases['HNSW index build']:.1f}s ({index_size}; "
            f"maintenance_work_mem={args.maintenance_work_mem}, max_parallel_maintenance_workers={parallel})")

        # Query vectors: half perturbed copies of stored vectors, half fresh random ones.
        query_rng = np.random.default_rng(args.seed + 1)
        perturbed_count = args.queries // 2
        sources = query_rng.choice(args.entries, size=perturbed_count, replace=False)
        noise = query_rng.standard_normal((perturbed_count, dims), dtype=np.float32) * (PERTURBATION / dims ** 0.5)
        perturbed = normalized(stored[sources] + noise)
        fresh = distribution.sample(query_rng, args.queries - perturbed_count)
        embedder = QueryVectors(dimensions=dims, name=model)
        kinds: dict[str, str] = {}
        for i, vector in enumerate(perturbed):
            embedder.vectors[f"perturbed-{i}"] = vector
            kinds[f"perturbed-{i}"] = "perturbed"
        for i, vector in enumerate(fresh):
            embedder.vectors[f"fresh-{i}"] = vector
            kinds[f"fresh-{i}"] = "fresh"
        for i in range(WARMUP):
            embedder.vectors[f"warmup-{i}"] = distribution.sample(query_rng, 1)[0]
        entry_ids = dict(FaqEntry.objects.filter(kb=kb, external_id__in=[f"bench-{s}" for s in sources])
                         .values_list("external_id", "id"))
        source_entry = {f"perturbed-{i}": entry_ids[f"bench-{s}"] for i, s in enumerate(sources)}

        with mock.patch.object(selectors, "get_embedder", lambda name: embedder):
            # The plans of the exact statements the product runs, with its SET LOCAL settings.
            plans_hnsw, plans_exact = Plans(), Plans()
            with explain_vector_search(plans_hnsw):
                faq_vector_search(kb=kb, query="warmup-0", k=k)
            with explain_vector_search(plans_exact):
                faq_vector_search(kb=kb, query="warmup-0", k=k, exact=True)
            uses_index = any(index_name(dims) in line for line in plans_hnsw.lines)
            exact_avoids = not any("hnsw" in line for line in plans_exact.lines)
            print(f"\nEXPLAIN, HNSW path ({'uses ' + index_name(dims) if uses_index else 'DOES NOT USE the index'}):")
            print("\n".join(f"  {short(line)}" for line in plans_hnsw.lines[:6]))
            print(f"EXPLAIN, exact path ({'no HNSW index' if exact_avoids else 'USES an HNSW index'}):")
            print("\n".join(f"  {short(line)}" for line in plans_exact.lines[:8]))

            for i in range(WARMUP):
                faq_vector_search(kb=kb, query=f"warmup-{i}", k=k)
                faq_vector_search(kb=kb, query=f"warmup-{i}", k=k, exact=True)

            latency: dict[str, list[float]] = {"hnsw": [], "exact": []}
            recalls: dict[str, list[float]] = {"perturbed": [], "fresh": []}
            top1_source = 0
            top1_same = {"perturbed": 0, "fresh": 0}
            exact_results: dict[str, set[int]] = {}
            names = list(embedder.vectors)[: args.queries]
            order = np.random.default_rng(args.seed + 2).permutation(len(names))
            deadline = time.monotonic() + args.max_seconds
            started = time.perf_counter()
            for position, index in enumerate(tqdm(order, desc="queries (HNSW + exact)", unit="q")):
                name = names[index]
                results: dict[str, list[int]] = {}
                # Alternate which path goes first, so neither always runs on a warmer cache.
                for path in ("hnsw", "exact") if position % 2 == 0 else ("exact", "hnsw"):
                    t0 = time.perf_counter()
                    hits = faq_vector_search(kb=kb, query=name, k=k, exact=path == "exact")
                    latency[path].append((time.perf_counter() - t0) * 1000)
                    results[path] = [hit.entry_id for hit in hits]
                truth = exact_results[name] = set(results["exact"])
                top1_same[kinds[name]] += results["hnsw"][:1] == results["exact"][:1]
                recalls[kinds[name]].append(len(truth & set(results["hnsw"])) / max(1, len(truth)))
                if kinds[name] == "perturbed" and results["exact"][:1] == [source_entry[name]]:
                    top1_source += 1
                if time.monotonic() > deadline:
                    log(f"stopped after {position + 1} queries: --max-seconds {args.max_seconds:.0f} reached")
                    break
            phases["queries"] = time.perf_counter() - started

            # Diagnostic: is recall bounded by ef_search (tunable) or by the graph itself?
            sweep: dict[int, tuple[float, float]] = {}
            swept = [names[index] for index in order if names[index] in exact_results][: args.sweep_queries]
            started = time.perf_counter()
            for ef in [int(value) for value in args.ef_sweep.split(",") if value.strip()]:
                scores, times = [], []
                with mock.patch.object(selectors, "HNSW_EF_SEARCH", ef):
                    for name in tqdm(swept, desc=f"sweep ef_search={ef}", unit="q"):
                        t0 = time.perf_counter()
                        found = {hit.entry_id for hit in faq_vector_search(kb=kb, query=name, k=k)}
                        times.append((time.perf_counter() - t0) * 1000)
                        scores.append(len(found & exact_results[name]) / max(1, len(exact_results[name])))
                sweep[ef] = (statistics.fmean(scores), percentile(times, 50))
            if sweep:
                phases["ef_search sweep"] = time.perf_counter() - started

    done = len(latency["hnsw"])
    every = recalls["perturbed"] + recalls["fresh"]
    p50 = {path: percentile(values, 50) for path, values in latency.items()}
    p95 = {path: percentile(values, 95) for path, values in latency.items()}
    print(f"\n{args.entries} entries x {dims} dims ({distribution.describe()}), {done} queries "
          f"({len(recalls['perturbed'])} perturbed copies, {len(recalls['fresh'])} fresh), k={k}, "
          f"hnsw.ef_search={max(selectors.HNSW_EF_SEARCH, k)} (product setting)")
    print(f"{'path':<8}{'p50 ms':>10}{'p95 ms':>10}{'mean ms':>10}")
    for path in ("hnsw", "exact"):
        print(f"{path:<8}{p50[path]:>10.2f}{p95[path]:>10.2f}{statistics.fmean(latency[path]):>10.2f}")
    print(f"speed-up exact/HNSW: p50 {p50['exact'] / p50['hnsw']:.1f}x, p95 {p95['exact'] / p95['hnsw']:.1f}x")
    print(f"HNSW recall@{k} vs exact: mean {statistics.fmean(every):.3f}, min {min(every):.3f}")
    for kind, values in recalls.items():
        if values:
            print(f"  {kind:<10} mean {statistics.fmean(values):.3f}, min {min(values):.3f} ({len(values)} queries)")
    if recalls["perturbed"]:
        print(f"exact top-1 is the perturbed vector's source: {top1_source}/{len(recalls['perturbed'])}; "
              f"HNSW top-1 = exact top-1: perturbed {top1_same['perturbed']}/{len(recalls['perturbed'])}, "
              f"fresh {top1_same['fresh']}/{len(recalls['fresh'])}")
    if sweep:
        print(f"diagnostic, same SQL with other hnsw.ef_search ({len(swept)} queries): " + "; ".join(
            f"ef={ef} recall@{k} {score:.3f} p50 {ms:.1f}ms" for ef, (score, ms) in sweep.items()))
    print("phases: " + ", ".join(f"{name} {seconds:.1f}s" for name, seconds in phases.items())
          + f"; total {time.perf_counter() - started_run:.0f}s")
    return 0 if uses_index and exact_avoids else 1


if __name__ == "__main__":
    sys.exit(main())
