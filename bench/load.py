"""Mixed traffic at high concurrency, then the same with the rerank worker saturated.

Brings up its own Postgres+pgvector and Redis and the product as `make up` runs it (bench/_stack.py:
gunicorn 2 workers x 8 threads, the CPU worker, the rerank worker with 16 threads, the demo
knowledge base, warmed reranker) on loopback, with the throttle raised (KB_THROTTLE_RATE) so that
it does not shape the numbers. Then two phases of the same traffic mix, each bounded by a request
count and a duration:

* 80 % ``POST /api/v1/ask`` — a share (--repeat-rate) repeats an earlier question, popular ones
  more often (the first asked are the most repeated); the rest are new paraphrases of demo entries;
* 15 % FAQ reads — ``GET /api/v1/kbs/demo/entries/{id}`` (two in three) or a page of the entry list;
* 5 % ``POST /api/v1/feedback`` on an answer given earlier in the run.

Phase 2 first fills the rerank queue with heavy rerank tasks (long documents the engine has never
seen) and keeps it filled: asks then wait KB_RERANK_TIMEOUT and answer degraded, and none may fail.

Prints per phase: throughput, p50/p95/p99 of all requests and per kind, errors (must be 0), the
asks' cache hit rate, shared and degraded answers, and the rerank queue depth it ran against.

    .venv/bin/python bench/load.py [--requests 3000] [--saturated-requests 1500] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import httpx
from _stack import DEMO_FILE, bench_stack, log, percentile, start_product
from _traffic import Question, questions, run_concurrently

REQUEST_TIMEOUT = 120.0
MIX = (("ask", 0.80), ("read", 0.15), ("feedback", 0.05))
# Saturation: the rerank queue is topped up to this many heavy tasks, each this many documents.
FLOOD_QUEUE_DEPTH = 40
FLOOD_DOCUMENTS = 8


@dataclass(frozen=True)
class Call:
    kind: str
    question: Question | None = None


@dataclass(frozen=True)
class Outcome:
    kind: str
    ms: float
    status: int
    error: str = ""
    cache: str = ""
    rerank: str = ""


class Traffic:
    """The calls of one phase, and what they need from earlier answers (for repeats and feedback)."""

    def __init__(self, base: str, *, ask_key: str, read_key: str, entry_ids: list[int], seed: int,
                 connections: int) -> None:
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        self.asks = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {ask_key}"}, limits=limits,
                                 timeout=REQUEST_TIMEOUT)
        self.reads = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {read_key}"}, limits=limits,
                                  timeout=REQUEST_TIMEOUT)
        self.entry_ids = entry_ids
        self.fresh = iter(questions(seed))
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.asked: list[Question] = []
        self.answers: list[dict[str, Any]] = []  # ticket, question_id, candidate entry ids

    def plan(self, count: int, repeat_rate: float) -> list[Call]:
        kinds = self.rng.choices([kind for kind, _ in MIX], weights=[share for _, share in MIX], k=count)
        calls = []
        for kind in kinds:
            question = None
            if kind == "ask":
                new = None if self.asked and self.rng.random() < repeat_rate else next(self.fresh, None)
                # Popular questions come first and come back most: a skewed pick over the asked ones.
                question = new or self.asked[int(len(self.asked) * self.rng.random() ** 2)]
                if new is not None:
                    self.asked.append(new)
            calls.append(Call(kind, question))
        return calls

    def run(self, call: Call) -> Outcome:
        started = time.perf_counter()
        try:
            response, body = self._send(call)
        except httpx.HTTPError as exc:
            return Outcome(call.kind, (time.perf_counter() - started) * 1000, 0, error=f"{type(exc).__name__}: {exc}")
        ms = (time.perf_counter() - started) * 1000
        if not response.is_success:
            return Outcome(call.kind, ms, response.status_code, error=response.text[:200])
        if call.kind != "ask":
            return Outcome(call.kind, ms, response.status_code)
        candidates = [entry["id"] for entry in [body["answer"], *body["alternatives"]] if entry]
        with self.lock:
            self.answers.append({"ticket": body["ticket"], "question_id": body["question_id"], "entries": candidates})
        return Outcome("ask", ms, response.status_code, cache=body["cache"], rerank=body["rerank"]["status"])

    def _send(self, call: Call) -> tuple[httpx.Response, dict[str, Any]]:
        if call.kind == "ask":
            assert call.question is not None
            response = self.asks.post("/api/v1/ask", json={"kb": "demo", "question": call.question.text})
            return response, response.json() if response.is_success else {}
        if call.kind == "read":
            with self.lock:
                entry, offset = self.rng.choice(self.entry_ids), self.rng.randrange(len(self.entry_ids))
                listing = self.rng.random() < 1 / 3
            if listing:
                return self.reads.get("/api/v1/kbs/demo/entries", params={"limit": 20, "offset": offset}), {}
            return self.reads.get(f"/api/v1/kbs/demo/entries/{entry}"), {}
        with self.lock:
            answer = self.rng.choice(self.answers)
            helpful = self.rng.random() < 0.7
            chosen = None if helpful or len(answer["entries"]) < 2 else self.rng.choice(answer["entries"][1:])
        feedback = {"ticket": answer["ticket"], "question_id": answer["question_id"], "helpful": helpful,
                    "chosen_entry": chosen, "comment": "" if helpful else "not what I asked"}
        return self.asks.post("/api/v1/feedback", json=feedback), {}

    def close(self) -> None:
        self.asks.close()
        self.reads.close()


class RerankFlood:
    """Keeps the rerank queue FLOOD_QUEUE_DEPTH heavy tasks deep, and samples its depth."""

    def __init__(self, seed: int) -> None:
        import redis
        from django.conf import settings

        self.queue = settings.KB_RERANK_QUEUE
        self.redis = redis.Redis.from_url(settings.REDIS_URL)
        texts = [json.loads(line)["answer"] for line in DEMO_FILE.read_text().splitlines() if line.strip()]
        self.texts = texts
        self.rng = random.Random(seed)
        self.depths: list[float] = []
        self.submitted = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="rerank-flood", daemon=True)

    def _document(self) -> str:
        # Three answers in a new order plus a case number: text the engine has not seen before.
        self.submitted += 1
        return " ".join(self.rng.sample(self.texts, 3)) + f" (case {self.submitted})"

    def _loop(self) -> None:
        from rerank.batching import RerankRequest
        from rerank.services import rerank_submit

        while not self.stop.is_set():
            depth = int(self.redis.llen(self.queue))
            self.depths.append(float(depth))
            for _ in range(max(0, FLOOD_QUEUE_DEPTH - depth)):
                documents = [self._document() for _ in range(FLOOD_DOCUMENTS)]
                # Expiring: once the phase ends the backlog drains instead of outliving the run.
                rerank_submit(requests=[RerankRequest(query="which of these explains the charge", documents=documents)],
                              expires=120)
            self.stop.wait(1.0)

    def __enter__(self) -> RerankFlood:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.depths or self.depths[-1] < FLOOD_QUEUE_DEPTH // 2:
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
        log(f"rerank queue flooded: depth {self.depths[-1] if self.depths else 0:.0f}")
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=10)


def report(label: str, outcomes: list[Outcome], seconds: float, extra: str = "") -> int:
    errors = [o for o in outcomes if o.error]
    asks = [o for o in outcomes if o.kind == "ask" and not o.error]
    cache = Counter(o.cache for o in asks)
    print(f"\n{label}: {len(outcomes)} requests in {seconds:.1f}s = {len(outcomes) / seconds:.1f} req/s, "
          f"errors {len(errors)}{extra}")
    print(f"{'kind':<10}{'n':>6}{'p50 ms':>10}{'p95 ms':>10}{'p99 ms':>10}")
    for kind in ["all", *(kind for kind, _ in MIX)]:
        ms = [o.ms for o in outcomes if kind in ("all", o.kind)]
        if ms:
            print(f"{kind:<10}{len(ms):>6}{percentile(ms, 50):>10.1f}{percentile(ms, 95):>10.1f}"
                  f"{percentile(ms, 99):>10.1f}")
    if asks:
        print(f"asks: cache hit {cache['hit'] / len(asks):.1%}, shared {cache['shared']}, miss {cache['miss']}; "
              f"degraded {sum(1 for o in asks if o.rerank == 'degraded')}/{len(asks)}")
    for outcome in errors[:5]:
        print(f"error: {outcome.kind} HTTP {outcome.status} {outcome.error}")
    return len(errors)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=3000, help="requests of the normal phase")
    parser.add_argument("--saturated-requests", type=int, default=1500, help="requests of the saturated phase")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--repeat-rate", type=float, default=0.6, help="share of asks repeating an earlier question")
    parser.add_argument("--max-seconds", type=float, default=240, help="cap per phase (stops submitting)")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--keep", action="store_true", help="keep the stack's logs under var/bench/")
    args = parser.parse_args()
    logging.getLogger("httpx").setLevel(logging.WARNING)
    started_run = time.perf_counter()
    with bench_stack("load", extra_env={"KB_THROTTLE_RATE": "1000000/min"}, keep=args.keep) as stack:
        from chat.models import ApiKey
        from chat.services.keys import api_key_create
        from knowledge.models import FaqEntry, KnowledgeBase

        base = start_product(stack)
        demo = KnowledgeBase.objects.get(slug="demo")
        _, ask_key = api_key_create(name="chat backend", kind=ApiKey.Kind.SECRET, kb=demo, scopes=["ask", "feedback"])
        _, read_key = api_key_create(name="faq reader", kind=ApiKey.Kind.SECRET, kb=demo, scopes=["knowledge:write"])
        entry_ids = list(FaqEntry.objects.filter(kb=demo).values_list("pk", flat=True))
        traffic = Traffic(base, ask_key=ask_key, read_key=read_key, entry_ids=entry_ids, seed=args.seed,
                          connections=args.concurrency)
        errors = 0
        try:
            # Warm-up (not counted): both gunicorn workers load the query embedder; feedback needs answers.
            warm = traffic.plan(16, 0.0)
            run_concurrently(traffic.run, [Call("ask", c.question) for c in warm if c.question], 4,
                             max_seconds=args.max_seconds, desc="warm-up")
            outcomes, seconds = run_concurrently(traffic.run, traffic.plan(args.requests, args.repeat_rate),
                                                 args.concurrency, max_seconds=args.max_seconds, desc="normal")
            errors += report(f"1) normal, concurrency {args.concurrency}", outcomes, seconds)
            with RerankFlood(args.seed) as flood:
                outcomes, seconds = run_concurrently(
                    traffic.run, traffic.plan(args.saturated_requests, args.repeat_rate), args.concurrency,
                    max_seconds=args.max_seconds, desc="rerank saturated")
            depths = flood.depths or [0.0]
            errors += report(f"2) rerank worker saturated, concurrency {args.concurrency}", outcomes, seconds,
                             f"; rerank queue depth min {min(depths):.0f} / median {percentile(depths, 50):.0f} / "
                             f"max {max(depths):.0f}, {flood.submitted} heavy documents queued")
        finally:
            traffic.close()
        problem = stack.exited()
    if problem:
        print(f"a product process exited during the run: {problem}")
    print(f"total {time.perf_counter() - started_run:.0f}s")
    return 1 if errors or problem else 0


if __name__ == "__main__":
    sys.exit(main())
