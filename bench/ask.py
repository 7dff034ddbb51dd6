"""POST /api/v1/ask end to end: answer-cache hits vs misses, and throughput at several concurrencies.

Brings up its own Postgres+pgvector and Redis (bench/_stack.py) and the product the way `make up`
does (scripts/up.py): gunicorn serving kbservice.wsgi (2 workers x 8 threads) on a free port, the
CPU Celery worker (-Q default -c 2) and the rerank worker (-P threads -c 16); loads
knowledge/data/demo_faq.jsonl with `manage.py kb_load_demo --file`, creates a secret API key with
scope ask, warms the rerank worker (`manage.py kb_rerank_warmup --kb demo`), and raises the throttle
(KB_THROTTLE_RATE=1000000/min) so it does not shape the numbers. Then, in one run:

1. latency at concurrency 1, a new question (miss) and a repeat of an already-answered one (hit)
   alternately, classified by the ``cache`` field of each answer; p50/p95 each and the ratio;
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
import threading
import time
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx
from _stack import PYTHON, ROOT, BenchStack, bench_stack, log, percentile
from tqdm import tqdm

DEMO_FILE = ROOT / "knowledge" / "data" / "demo_faq.jsonl"
READY_TIMEOUT = 300.0
REQUEST_TIMEOUT = 60.0

# Paraphrases of demo entries (external_id -> how a customer might put it).
PARAPHRASES: dict[str, list[str]] = {
    "demo-zh-001": ["扫码付款的时候显示交易异常，让我稍后再试，咋办"],
    "demo-zh-002": ["付钱的时候一直说支付渠道繁忙"],
    "demo-zh-003": ["一个订单扣了我两次款"],
    "demo-zh-004": ["钱已经付了但订单还是待支付"],
    "demo-zh-005": ["用银行卡付不了，说超出限额了"],
    "demo-zh-006": ["没来得及付款订单就自动取消了"],
    "demo-zh-007": ["买东西能不能分期付？"],
    "demo-zh-008": ["优惠券用不上是怎么回事"],
    "demo-zh-010": ["电子发票在哪里开"],
    "demo-zh-011": ["发票上的税号填错了能重开吗"],
    "demo-zh-014": ["我想退款，怎么操作"],
    "demo-zh-015": ["退款几天能到账"],
    "demo-zh-016": ["七天无理由退货需要满足什么条件"],
    "demo-zh-017": ["退货的快递费谁出"],
    "demo-zh-018": ["衣服买小了可以换大一码吗"],
    "demo-zh-021": ["显示已发货但是物流一直不动"],
    "demo-zh-023": ["下完单还能改收货地址吗"],
    "demo-zh-024": ["物流说签收了但我根本没收到"],
    "demo-zh-028": ["登录不上账号，老是提示失败"],
    "demo-zh-029": ["密码忘了怎么找回"],
    "demo-zh-031": ["手机收不到验证码短信"],
    "demo-zh-032": ["密码输错太多次账号被锁了"],
    "demo-zh-036": ["我想把账号注销掉"],
    "demo-zh-037": ["怎么取消会员的自动续费"],
    "demo-zh-044": ["app一打开就闪退"],
    "demo-zh-055": ["调开放接口老是返回401"],
    "demo-zh-056": ["接口报429，请求太多了"],
    "demo-zh-060": ["人工客服怎么找，几点上班"],
    "demo-zh-062": ["刚买就降价了可以补差价吗"],
    "demo-zh-086": ["蓝牙耳机配对不上手机"],
    "demo-en-001": ['Payment failed with "transaction error, try again later" at checkout'],
    "demo-en-002": ["You charged my card two times for one order"],
    "demo-en-003": ["I already paid but the order says unpaid"],
    "demo-en-004": ["When will I get my refund?"],
    "demo-en-005": ["How can I send something back and who pays the return postage?"],
    "demo-en-006": ["Can I cancel my subscription without paying a penalty?"],
    "demo-en-007": ["I can't remember my password"],
    "demo-en-008": ["The SMS verification code never arrives"],
    "demo-en-009": ["Too many wrong password attempts and now my account is locked"],
    "demo-en-010": ["How to enable 2FA on my account"],
    "demo-en-011": ["Package marked as shipped but tracking is stuck"],
    "demo-en-012": ["Can I update my delivery address after placing the order?"],
    "demo-en-013": ["It says delivered but I didn't receive anything"],
    "demo-en-014": ["I need a VAT invoice with my company name on it"],
    "demo-en-015": ["The app closes immediately when I launch it"],
    "demo-en-016": ["Getting 401 unauthorized from your API"],
    "demo-en-017": ["iPhone not charging when plugged in"],
    "demo-en-018": ["MacBook battery runs out really quickly"],
    "demo-en-019": ["I want to close my account permanently"],
    "demo-en-020": ["My promo code isn't working"],
}
# Greetings and closings: each combination is a distinct question to the answer cache.
VARIANTS = {
    "zh": (["", "你好，", "请问", "客服你好，", "麻烦问一下，", "在吗？"],
           ["", "，谢谢", "，在线等", "，急", "，怎么处理"]),
    "en": (["", "Hi, ", "Hello, ", "Quick question: ", "Hey support, ", "Please help: "],
           ["", ", thanks", " - urgent", ", what should I do?", " (asking again)"]),
}


@dataclass(frozen=True)
class Question:
    text: str
    expected: str  # external_id of the entry that answers it
    language: str


@dataclass
class Result:
    question: Question
    ms: float
    status: int
    cache: str = ""
    decision: str = ""
    rerank: str = ""
    engine: str = ""
    answered: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    error: str = ""


def questions(seed: int) -> list[Question]:
    """Every variant of every paraphrase, distinct after the answer cache's normalisation, shuffled."""
    from chat.answer_cache import normalize_question

    seen: set[str] = set()
    out: list[Question] = []
    for expected, texts in PARAPHRASES.items():
        language = "zh" if "-zh-" in expected else "en"
        prefixes, suffixes = VARIANTS[language]
        for text in texts:
            for prefix in prefixes:
                for suffix in suffixes:
                    body = text if not prefix or language == "zh" else text[0].lower() + text[1:]
                    variant = f"{prefix}{body}{suffix}"
                    key = normalize_question(variant)
                    if key not in seen:
                        seen.add(key)
                        out.append(Question(variant, expected, language))
    random.Random(seed).shuffle(out)
    return out


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
                      answered=answer.get("external_id") or "",
                      timings=body.get("timings_ms", {}))

    def close(self) -> None:
        self.client.close()


def run_concurrently(asker: Asker, batch: list[Question], concurrency: int, *, max_seconds: float,
                     desc: str) -> tuple[list[Result], float]:
    """Ask ``batch`` with ``concurrency`` threads; stops submitting after ``max_seconds``."""
    results: list[Result] = []
    lock = threading.Lock()
    pending = iter(batch)
    deadline = time.monotonic() + max_seconds

    def next_question() -> Question | None:
        with lock:
            if time.monotonic() > deadline:
                return None
            return next(pending, None)

    def loop(bar: tqdm[Any]) -> None:
        while (question := next_question()) is not None:
            result = asker.ask(question)
            with lock:
                results.append(result)
                bar.update(1)

    started = time.perf_counter()
    with tqdm(total=len(batch), desc=desc, unit="req") as bar, ThreadPoolExecutor(concurrency) as pool:
        for future in [pool.submit(loop, bar) for _ in range(concurrency)]:
            future.result()
    return results, time.perf_counter() - started


def start_product(stack: BenchStack) -> str:
    """What scripts/up.py does after migrate, on a free port; returns the base URL."""
    seconds = stack.manage("kb_load_demo", "--file", str(DEMO_FILE))
    log(f"kb_load_demo --file {DEMO_FILE.relative_to(ROOT)}: {seconds:.1f}s")
    port = stack.free_port()
    stack.spawn("web", [PYTHON, "-m", "gunicorn", "kbservice.wsgi", "--bind", f"127.0.0.1:{port}",
                        "--workers", "2", "--threads", "8", "--timeout", "60", "--access-logfile", "-"])
    stack.spawn("worker", [PYTHON, "-m", "celery", "-A", "kbservice", "worker", "-Q", "default",
                           "-c", "2", "-n", f"cpu-{port}@%h", "-l", "INFO"])
    stack.spawn("rerank", [PYTHON, "-m", "celery", "-A", "kbservice", "worker", "-Q", "rerank",
                           "-P", "threads", "-c", "16", "--prefetch-multiplier", "1",
                           "-n", f"rerank-{port}@%h", "-l", "INFO"])
    base = f"http://127.0.0.1:{port}"
    started = time.perf_counter()
    stack.wait_http_ok(f"{base}/readyz", timeout=READY_TIMEOUT)
    log(f"gunicorn + CPU worker + rerank worker ready in {time.perf_counter() - started:.1f}s")
    seconds = stack.manage("kb_rerank_warmup", "--kb", "demo")
    log(f"kb_rerank_warmup --kb demo: {seconds:.1f}s")
    return base


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
            warm_results, _ = run_concurrently(asker, warm, 4, max_seconds=args.max_seconds, desc="warm-up")
            asked = [r.question for r in warm_results if not r.error]

            # 1. Hit vs miss, side by side at concurrency 1.
            phase: list[Result] = []
            deadline = time.monotonic() + args.max_seconds
            for _ in tqdm(range(args.pairs), desc="miss/hit pairs", unit="pair"):
                new = next(fresh)
                phase.append(asker.ask(new))
                phase.append(asker.ask(rng.choice(asked)))
                asked.append(new)
                if time.monotonic() > deadline:
                    log(f"latency phase stopped after --max-seconds {args.max_seconds:.0f}")
                    break
            every += phase
            misses = [r.ms for r in phase if r.cache == "miss"]
            hits = [r.ms for r in phase if r.cache == "hit"]

            # 2. Throughput with a realistic repeat rate.
            throughput: list[tuple[int, list[Result], float]] = []
            for concurrency in levels:
                pool = list(asked)  # answered before this level: repeats of these should be hits
                batch = [rng.choice(pool) if rng.random() < args.repeat_rate else next(fresh)
                         for _ in range(args.requests)]
                results, seconds = run_concurrently(asker, batch, concurrency, max_seconds=args.max_seconds,
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
    print(f"1) concurrency 1, miss (new question) and hit (repeat) alternately; {len(phase)} requests "
          f"(by the answer's cache field: {dict(Counter(r.cache or 'error' for r in phase))})")
    print(f"{'cache':<6}{'n':>6}{'p50 ms':>10}{'p95 ms':>10}{'mean ms':>10}")
    print(row("miss", misses))
    print(row("hit", hits))
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
