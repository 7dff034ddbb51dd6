"""What hundreds of open widgets waiting for a person cost everyone else's asks.

Brings up its own Postgres+pgvector and Redis and the product as `make up` runs it (bench/_stack.py:
gunicorn as gunicorn.conf.py sets it, the CPU worker, the rerank worker, the demo knowledge base), hands off
--widgets tickets under one publishable key, then runs the same ask traffic twice, side by side in one
run:

1. asks alone for --seconds (a share repeats an earlier question of the phase, as customers do), from
   an empty answer cache: customers arriving at --ask-rate per second (an open loop, the demand of a
   site whose other customers keep coming), or with --ask-rate 0 --concurrency customers asking in a
   closed loop (the machine saturated: what share of its capacity the polls take);
2. the very same asks, from an empty answer cache again, while every handed-off ticket's widget polls
   `GET /api/v1/tickets/{id}/messages?after=` as the widget does (every 3 s from the previous poll's
   start), and agents reply to random tickets (--replies-per-second, through the console's
   service) so that polls also carry news.

Prints the asks' p50/p95/p99 and throughput per phase and their ratio, the polls' rate, latency and
errors, and how long replies took to reach a polling widget (the issue's promise: within 5 s).

    .venv/bin/python bench/widget_polls.py [--widgets 300] [--seconds 60] [--ask-rate 1.5 | 0 --concurrency 8]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing
import random
import sys
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event

import httpx
from _stack import bench_stack, log, percentile, start_product
from _traffic import Question, questions, run_arriving, run_concurrently

ORIGIN = "https://shop.example"
POLL_MS = 3000  # chat/static/chat/widget/widget.js: POLL_MS
REQUEST_TIMEOUT = 120.0


@dataclass
class Asked:
    ms: float
    status: int
    cache: str = ""
    rerank: str = ""


@dataclass
class Polls:
    """What the widget processes saw: (start, ms) of each poll (time.monotonic(), the same clock in
    every process), errors, and when each agent reply first reached its widget."""

    timings: list[tuple[float, float]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    seen_at: dict[str, float] = field(default_factory=dict)  # reply text -> when its widget got it

    def merge(self, other: Polls) -> None:
        self.timings += other.timings
        self.errors += other.errors
        self.seen_at.update(other.seen_at)


def ask_plan(pool: list[Question], count: int, repeat_rate: float, seed: int) -> list[str]:
    rng = random.Random(seed)
    fresh = iter(pool)
    asked: list[str] = []
    plan = []
    for _ in range(count):
        new = None if asked and rng.random() < repeat_rate else next(fresh, None)
        text = new.text if new else asked[int(len(asked) * rng.random() ** 2)]
        if new:
            asked.append(text)
        plan.append(text)
    return plan


def run_asks(base: str, key: str, plan: list[str], *, rate: float, concurrency: int, seconds: float, desc: str
             ) -> tuple[list[Asked], float]:
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, limits=limits,
                      timeout=REQUEST_TIMEOUT) as client:
        def one(text: str) -> Asked:
            started = time.perf_counter()
            try:
                response = client.post("/api/v1/ask", json={"kb": "demo", "question": text})
            except httpx.HTTPError:
                return Asked((time.perf_counter() - started) * 1000, 0)
            ms = (time.perf_counter() - started) * 1000
            if not response.is_success:
                return Asked(ms, response.status_code)
            body = response.json()
            return Asked(ms, response.status_code, body["cache"], body["rerank"]["status"])

        if rate > 0:
            return run_arriving(one, plan, rate, max_seconds=seconds, desc=desc)
        return run_concurrently(one, plan, concurrency, max_seconds=seconds, desc=desc)


async def poll_widgets(base: str, key: str, tickets: list[str], stop: Event) -> Polls:
    polls = Polls()
    headers = {"Authorization": f"Bearer {key}", "Origin": ORIGIN}
    limits = httpx.Limits(max_connections=len(tickets), max_keepalive_connections=len(tickets))
    async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits, timeout=REQUEST_TIMEOUT) as client:

        async def widget(ticket: str, offset: float) -> None:
            cursor = 0
            await asyncio.sleep(offset)  # widgets were opened at different moments
            while not stop.is_set():
                started = time.monotonic()
                try:
                    response = await client.get(f"/api/v1/tickets/{ticket}/messages", params={"after": cursor})
                except httpx.HTTPError as exc:
                    polls.errors.append(f"{type(exc).__name__}: {exc}")
                else:
                    seen = time.monotonic()
                    polls.timings.append((started, (seen - started) * 1000))
                    if response.status_code != 200:
                        polls.errors.append(f"HTTP {response.status_code} {response.text[:120]}")
                    else:
                        body = response.json()
                        cursor = body["cursor"]
                        for item in body["messages"]:
                            if item["kind"] == "agent":
                                polls.seen_at.setdefault(item.get("text", ""), seen)
                # widget.js counts the interval from the poll's start
                await asyncio.sleep(max(0.0, POLL_MS / 1000 - (time.monotonic() - started)))

        await asyncio.gather(*(widget(ticket, random.uniform(0, POLL_MS / 1000)) for ticket in tickets))
    return polls


def widget_process(base: str, key: str, tickets: list[str], stop: Event, results: Queue) -> None:
    """A browser's worth of widgets: its own process, so that the clients' own work is not queued
    behind the asks' threads and the other widgets in one interpreter (which showed as seconds of
    poll latency the server never spent: its access log had p95 40 ms)."""
    logging.getLogger("httpx").setLevel(logging.WARNING)
    results.put(asyncio.run(poll_widgets(base, key, tickets, stop)))


def reply_now_and_then(ticket_pks: list[int], per_second: float, stop: threading.Event) -> dict[str, float]:
    """Agents answer random waiting tickets; returns when each reply committed (time.monotonic()),
    which is what delivery is measured from."""
    from django.db import close_old_connections

    from chat.models import Ticket
    from chat.services.messages import agent_message_send

    rng = random.Random(5)
    sent_at: dict[str, float] = {}
    while not stop.wait(1 / per_second):
        ticket = Ticket.objects.get(pk=rng.choice(ticket_pks))
        text = f"reply {len(sent_at)}: 您好，我是客服，正在为您查询。"
        agent_message_send(ticket=ticket, body=text, via="console", author_name="bench agent")
        sent_at[text] = time.monotonic()
    close_old_connections()
    return sent_at


def answer_cache_clear() -> None:
    """Both phases start cold, so their cache hits (and so their latencies) are comparable."""
    import redis
    from django.conf import settings

    client = redis.Redis.from_url(settings.REDIS_URL)
    for key in client.scan_iter("kb:answer:*", count=1000):
        client.delete(key)


def summary(label: str, asks: list[Asked], seconds: float) -> tuple[float, float]:
    ok = [a.ms for a in asks if a.status == 200]
    errors = len(asks) - len(ok)
    hits = sum(1 for a in asks if a.cache == "hit")
    # A degraded answer (no rerank within KB_RERANK_TIMEOUT) is never cached: it also lowers the hits.
    degraded = sum(1 for a in asks if a.rerank == "degraded")
    p50, p95, p99 = (percentile(ok, q) for q in (50, 95, 99))
    print(f"{label}: {len(asks)} asks in {seconds:.0f}s ({len(asks) / seconds:.1f}/s), p50 {p50:.0f} ms, "
          f"p95 {p95:.0f} ms, p99 {p99:.0f} ms, cache hits {hits}/{len(asks)}, degraded {degraded}, errors {errors}")
    return p50, p95


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--widgets", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=60, help="length of each phase")
    parser.add_argument("--ask-rate", type=float, default=1.5, help="asks arriving per second; 0: a closed loop")
    parser.add_argument("--concurrency", type=int, default=8, help="with --ask-rate 0: customers asking at once")
    parser.add_argument("--repeat-rate", type=float, default=0.6)
    parser.add_argument("--replies-per-second", type=float, default=2.0)
    parser.add_argument("--poll-processes", type=int, default=4, help="client processes the widgets are spread over")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--keep", action="store_true", help="keep the stack's logs under var/bench/")
    args = parser.parse_args()
    logging.getLogger("httpx").setLevel(logging.WARNING)
    env = {"KB_THROTTLE_RATE": "1000000/min", "KB_WIDGET_THROTTLE_RATE": "1000000/min"}
    with bench_stack("widget-polls", extra_env=env, keep=args.keep) as stack:
        from chat.models import ApiKey, Ticket
        from chat.services.keys import api_key_create
        from chat.services.tickets import ticket_create, ticket_hand_off
        from knowledge.models import KnowledgeBase

        base = start_product(stack)
        demo = KnowledgeBase.objects.get(slug="demo")
        _, ask_key = api_key_create(name="chat backend", kind=ApiKey.Kind.SECRET, kb=demo, scopes=["ask"])
        _, widget_key = api_key_create(name="shop widget", kind=ApiKey.Kind.PUBLISHABLE, kb=demo,
                                       allowed_origins=[ORIGIN])
        waiting: list[Ticket] = []
        for number in range(args.widgets):
            ticket = ticket_create(kb=demo, customer=f"customer {number}", channel="widget")
            waiting.append(ticket_hand_off(ticket=ticket, via="widget"))
        log(f"{len(waiting)} tickets handed off, one widget each")

        plan = ask_plan(questions(args.seed), 100_000, args.repeat_rate, args.seed)
        run_asks(base, ask_key, plan[:16], rate=0, concurrency=4, seconds=args.seconds, desc="warm-up")
        answer_cache_clear()
        before, before_s = run_asks(base, ask_key, plan, rate=args.ask_rate, concurrency=args.concurrency,
                                    seconds=args.seconds, desc="asks alone")
        answer_cache_clear()

        tickets = [str(t.public_id) for t in waiting]
        context = multiprocessing.get_context("spawn")
        stop_polling, results = context.Event(), context.Queue()
        pollers = [context.Process(target=widget_process, daemon=True,
                                   args=(base, widget_key, tickets[n::args.poll_processes], stop_polling, results))
                   for n in range(args.poll_processes)]
        for poller in pollers:
            poller.start()
        stop_replying = threading.Event()
        replies: dict[str, float] = {}
        replier = threading.Thread(target=lambda: replies.update(reply_now_and_then(
            [t.pk for t in waiting], args.replies_per_second, stop_replying)), daemon=True)
        time.sleep(POLL_MS / 1000 * 2)  # every widget has polled at least once
        started = time.monotonic()
        replier.start()
        after, after_s = run_asks(base, ask_key, plan, rate=args.ask_rate, concurrency=args.concurrency,
                                  seconds=args.seconds, desc=f"asks + {args.widgets} polling widgets")
        ended = time.monotonic()
        stop_replying.set()
        replier.join()
        time.sleep(POLL_MS / 1000 * 2)  # the last replies reach their widgets
        stop_polling.set()
        polls = Polls()
        for _ in pollers:
            polls.merge(results.get(timeout=REQUEST_TIMEOUT + POLL_MS / 1000))
        for poller in pollers:
            poller.join()
        problem = stack.exited()

    print()
    p50_before, p95_before = summary("1) asks alone", before, before_s)
    p50_after, p95_after = summary(f"2) asks with {args.widgets} widgets polling", after, after_s)
    print(f"ratio with/without polling: p50 x{p50_after / p50_before:.2f}, p95 x{p95_after / p95_before:.2f}, "
          f"throughput x{(len(after) / after_s) / (len(before) / before_s):.2f}")
    poll_ms = [ms for _, ms in polls.timings]
    poll_rate = sum(1 for start, _ in polls.timings if started <= start <= ended) / (ended - started)
    print(f"polls: {len(poll_ms)} ({poll_rate:.0f}/s during phase 2, {args.poll_processes} client processes), "
          f"p50 {percentile(poll_ms, 50):.0f} ms, p95 {percentile(poll_ms, 95):.0f} ms, "
          f"p99 {percentile(poll_ms, 99):.0f} ms, errors {len(polls.errors)}")
    delivered = [(polls.seen_at[text] - sent) * 1000 for text, sent in replies.items() if text in polls.seen_at]
    unseen = len(replies) - len(delivered)
    delivered = delivered or [float("nan")]
    print(f"replies: {len(replies)} sent, {len(replies) - unseen} seen by their widget; delivery p50 "
          f"{percentile(delivered, 50) / 1000:.1f} s, p95 {percentile(delivered, 95) / 1000:.1f} s, "
          f"max {max(delivered) / 1000:.1f} s; not seen by the end {unseen}")
    for error in polls.errors[:5]:
        print(f"poll error: {error}")
    if problem:
        print(f"a product process exited during the run: {problem}")
    errors = sum(1 for a in before + after if a.status != 200) + len(polls.errors)
    return 1 if errors or problem else 0


if __name__ == "__main__":
    sys.exit(main())
