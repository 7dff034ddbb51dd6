"""POST /api/v1/ask end to end: answer-cache hits vs misses, and throughput at several concurrencies.

Brings up its own Postgres+pgvector and Redis (bench/_stack.py) and the product the way `make up`
does (scripts/up.py): gunicorn serving kbservice.wsgi (2 workers x 8 threads) on a free port, the
CPU Celery worker (-Q default -c 2) and the rerank worker (-P threads -c 16); loads
knowledge/data/demo_faq.jsonl with `manage.py kb_load_demo --file`, creates a secret API key with
scope ask, warms the rerank worker (`manage.py kb_rerank_warmup --kb demo`), and raises the throttle
(KB_THROTTLE_RATE=1000000/min) so it does not shape the numbers. Then, in one run:

1. latency at concurrency 1, a new question (miss) and a repeat of an already-answered one (hit)
   alternately, classified by the ``cache`` field of each answer; p50/p95 each and the ratio; with
   the base uncalibrated and with a per-language calibration in force (what calibration costs an ask:
   its thresholds are looked up on every answer), the same new questions in both, pair by pair;
2. throughput at each --concurrency with --repeat-rate of the requests repeating earlier
   questions (the rest are new): requests/s, latency, errors (must be 0), cache hit rate.

Questions are paraphrases of demo entries, in Chinese and English, with greeting/closing variants
that make distinct cache keys (what misses are made of). Traffic goes to 127.0.0.1 only.

    .venv/bin/python bench/ask.py [--requests 300] [--concurrency 1,8,32] [--repeat-rate 0.7]
"""

from __future__ import annotations

import argparse
import logging
import random
import statistics
import sys
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx
from _stack import bench_stack, log, percentile, start_product
from _traffic import Question, questions, run_concurrently
from tqdm import tqdm

REQUEST_TIMEOUT = 60.0

@dataclass
class Result:
    question: Question
    ms: float
    status: int
    cache: str = ""
    decision: str = ""
    rerank: str = ""
    engine: str = ""
    model: str = ""
    answered: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    error: str = ""


class Asker:
    def __init__(self, base: str, key: str, connections: int) -> None:
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        self.client = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, limits=limits,
                                   timeout=REQUEST_TIMEOUT)

    def ask(self, question: Question) -> Result:
        started = time.perf_counter()
        try:
            response = self.client.post("/api/v1/ask", json={"kb": "demo", "question": question.text})
        except httpx.HTTPError as exc:
            return Result(question, (time.perf_counter() - started) * 1000, 0, error=f"{type(exc).__name__}: {exc}")
        ms = (time.perf_counter() - started) * 1000
        if response.status_code != 200:
            return Result(question, ms, response.status_code, error=response.text[:200])
        body: dict[str, Any] = response.json()
        answer = body.get("answer") or {}
        return Result(question, ms, 200, cache=body["cache"], decision=body["decision"],
                      rerank=body["rerank"]["status"], engine=body["rerank"].get("engine", ""),
                      model=body["rerank"].get("model", ""),
                      answered=answer.get("external_id") or "",
                      timings=body.get("timings_ms", {}))

    def close(self) -> None:
        self.client.close()


def row(label: str, values: list[float]) -> str:
    if not values:
        return f"{label:<6}{0:>6}{'-':>10}{'-':>10}{'-':>10}"
    return (f"{label:<6}{len(values):>6}{percentile(values, 50):>10.1f}{percentile(values, 95):>10.1f}"
            f"{statistics.fmean(values):>10.1f}")


def describe_answers(results: Iterable[Result]) -> str:
    ok = [r for r in results if not r.error]
    right = Counter(r.question.language for r in ok if r.answered == r.question.expected)
    total = Counter(r.question.language for r in ok)
    decisions = Counter(r.decision for r in ok)
    reranks = Counter(r.rerank for r in ok)
    return (f"top answer = expected entry {sum(right.values())}/{len(ok)} (zh {right['zh']}/{total['zh']}, "
            f"en {right['en']}/{total['en']}); decisions " + ", ".join(f"{k} {v}" for k, v in sorted(decisions.items()))
            + "; rerank " + ", ".join(f"{k} {v}" for k, v in sorted(reranks.items())))


def demo_calibration_put_in_force(*, engine: str, model: str) -> int:
    """A per-language calibration of the demo base as `make up` fitted one (thresholds and evidence
    counts of such a run), recorded for the engine and model answering now, so it applies."""
    from knowledge.models import KnowledgeBase
    from knowledge.services import knowledge_base_calibration_record

    fitted = {"en": {"answer_threshold": 0.67, "suggest_threshold": 0.07, "precision_bound": 0.928, "coverage": 0.25,
                     "labels_needed": None, "questions": 160},
              "zh": {"answer_threshold": 0.85, "suggest_threshold": 0.48, "precision_bound": 0.903,
                     "coverage": 0.358, "labels_needed": None, "questions": 688}}
    return knowledge_base_calibration_record(
        kb_id=KnowledgeBase.objects.get(slug="demo").pk, engine=engine, model=model, target_precision=0.9,
        confidence=0.95, answer_threshold=0.84, suggest_threshold=0.3, precision_bound=0.909, coverage=0.327,
        labels_needed=None, evidence={"similar_questions": {"questions": 424, "answerable": 424, "no_answer": 0}},
        risk_coverage=[], summary={}, feedback_until=0, by_language=fitted).pk


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=300, help="requests per concurrency level")
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--repeat-rate", type=float, default=0.7,
                        help="share of throughput requests repeating an earlier question")
    parser.add_argument("--pairs", type=int, default=40, help="miss/hit pairs of the latency comparison")
    parser.add_argument("--max-seconds", type=float, default=150, help="cap per phase (stops submitting)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", action="store_true", help="keep the stack's logs under var/bench/")
    args = parser.parse_args()
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    levels = [int(value) for value in args.concurrency.split(",") if value.strip()]
    started_run = time.perf_counter()
    every: list[Result] = []
    with bench_stack("ask", extra_env={"KB_THROTTLE_RATE": "1000000/min"}, keep=args.keep) as stack:
        from chat.services.keys import api_key_create
        from knowledge.models import KnowledgeBase

        base = start_product(stack)
        _key, raw_key = api_key_create(name="bench", kind="secret", kb=KnowledgeBase.objects.get(slug="demo"),
                                       scopes=["ask"])
        fresh = iter(questions(args.seed))
        rng = random.Random(args.seed)
        asker = Asker(base, raw_key, max([*levels, 4]))
        try:
            # Warm-up (not counted): both gunicorn workers load the query embedder on their first miss.
            warm = [next(fresh) for _ in range(8)]
            warm_results, _ = run_concurrently(asker.ask, warm, 4, max_seconds=args.max_seconds, desc="warm-up")
            asked = [r.question for r in warm_results if not r.error]

            # 1. Hit vs miss at concurrency 1, the base uncalibrated and calibrated in turn (pair by pair,
            # so both see the same machine). The calibration in force is part of the cache key: each state
            # has its own already-answered questions to repeat.
            engine = next(r for r in warm_results if r.engine)
            calibration_id = demo_calibration_put_in_force(engine=engine.engine, model=engine.model)
            states = {"uncalibrated": None, "calibrated": calibration_id}
            latency: dict[str, list[Result]] = {label: [] for label in states}
            answered: dict[str, list[Question]] = {}
            for label, state in states.items():
                KnowledgeBase.objects.filter(slug="demo").update(calibration_id=state)
                seeded, _ = run_concurrently(asker.ask, asked, 4, max_seconds=args.max_seconds, desc=f"seed, {label}")
                answered[label] = [r.question for r in seeded if not r.error]
            deadline = time.monotonic() + args.max_seconds
            for number in tqdm(range(args.pairs), desc="miss/hit pairs, each state", unit="pair"):
                # The same new question in both states (a miss in each: the keys differ), the state
                # asked first alternating, so neither gets the easier questions or the warmer machine.
                new = next(fresh)
                for label, state in list(states.items())[:: 1 if number % 2 else -1]:
                    KnowledgeBase.objects.filter(slug="demo").update(calibration_id=state)
                    latency[label] += [asker.ask(new), asker.ask(rng.choice(answered[label]))]
                    answered[label].append(new)
                if time.monotonic() > deadline:
                    log(f"latency phase stopped after --max-seconds {args.max_seconds:.0f}")
                    break
            phase = latency["calibrated"]
            KnowledgeBase.objects.filter(slug="demo").update(calibration_id=calibration_id)  # for the throughput phase
            every += latency["uncalibrated"] + phase
            asked = answered["calibrated"]
            misses = [r.ms for r in phase if r.cache == "miss"]
            hits = [r.ms for r in phase if r.cache == "hit"]

            # 2. Throughput with a realistic repeat rate.
            throughput: list[tuple[int, list[Result], float]] = []
            for concurrency in levels:
                pool = list(asked)  # answered before this level: repeats of these should be hits
                batch = [rng.choice(pool) if rng.random() < args.repeat_rate else next(fresh)
                         for _ in range(args.requests)]
                results, seconds = run_concurrently(asker.ask, batch, concurrency, max_seconds=args.max_seconds,
                                                    desc=f"concurrency {concurrency}")
                throughput.append((concurrency, results, seconds))
                asked += [q for q in batch if q not in pool]
                every += results
        finally:
            asker.close()
        problem = stack.exited()
        rerank_tracebacks = stack.tail("rerank", 400).count("Traceback")

    engines = ", ".join(sorted({r.engine for r in every if r.engine}))
    print(f"\nPOST /api/v1/ask, demo knowledge base, rerank engine {engines}; {len(every)} measured requests")
    print(f"1) concurrency 1, miss (new question) and hit (repeat) alternately; {len(phase)} requests each "
          f"uncalibrated and calibrated (by the answer's cache field: "
          f"{dict(Counter(r.cache or 'error' for r in phase))}, calibrated)")
    print(f"{'cache':<6}{'n':>6}{'p50 ms':>10}{'p95 ms':>10}{'mean ms':>10}")
    for label, results in latency.items():
        print(f"  {label}: decisions {dict(Counter(r.decision for r in results))}")
        for kind in ("miss", "hit"):
            print(row(kind, [r.ms for r in results if r.cache == kind]))
    for kind in ("miss", "hit"):
        before = [r.ms for r in latency["uncalibrated"] if r.cache == kind]
        after = [r.ms for r in latency.get("calibrated", []) if r.cache == kind]
        if before and after:
            print(f"calibrated/uncalibrated {kind}: p50 x{percentile(after, 50) / percentile(before, 50):.2f}, "
                  f"p95 x{percentile(after, 95) / percentile(before, 95):.2f}")
    if misses and hits:
        print(f"miss/hit: p50 {percentile(misses, 50) / percentile(hits, 50):.1f}x, "
              f"p95 {percentile(misses, 95) / percentile(hits, 95):.1f}x  (target: hit >= 20x faster)")
    parts = Counter[str]()
    miss_results = [r for r in phase if r.cache == "miss"]
    for result in miss_results:
        parts.update(result.timings)
    if miss_results:
        print("   miss, server-side mean ms: " + ", ".join(
            f"{name} {value / len(miss_results):.1f}" for name, value in parts.items()))
    print(f"2) throughput, {args.repeat_rate:.0%} repeats of earlier questions, {args.requests} requests per level")
    print(f"{'conc':<6}{'done':>6}{'req/s':>8}{'p50 ms':>9}{'p95 ms':>9}{'errors':>8}{'hit rate':>10}{'shared':>8}"
          f"{'degraded':>10}")
    errors = 0
    for concurrency, results, seconds in throughput:
        level_errors = sum(1 for r in results if r.error)
        errors += level_errors
        ms = [r.ms for r in results]
        cache = Counter(r.cache for r in results)
        print(f"{concurrency:<6}{len(results):>6}{len(results) / seconds:>8.1f}{percentile(ms, 50):>9.1f}"
              f"{percentile(ms, 95):>9.1f}{level_errors:>8}{cache['hit'] / max(1, len(results)):>10.1%}"
              f"{cache['shared']:>8}{sum(1 for r in results if r.rerank == 'degraded'):>10}")
    print("answers (all measured requests): " + describe_answers(every))
    for result in [r for r in every if r.error][:5]:
        print(f"error: HTTP {result.status} {result.error}")
    if problem:
        print(f"a product process exited during the run: {problem}")
    if rerank_tracebacks:
        print(f"rerank worker log has {rerank_tracebacks} tracebacks")
    print(f"total {time.perf_counter() - started_run:.0f}s")
    return 1 if errors or problem else 0


if __name__ == "__main__":
    sys.exit(main())
