"""The rerank worker is SIGKILLed while customers are asking."""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from pytest_django.fixtures import Settings

from chat.models import AskLog, Question, Ticket
from chat.services.ask import faq_rerank_document
from knowledge.models import FaqEntry, KnowledgeBase
from rerank.batching import RerankRequest
from rerank.services import rerank_score
from tests.conftest import WorkerProcess, start_rerank_worker
from tests.helpers import wait_until
from tests.reliability.load import AskLoad, percentile, shop_questions

pytestmark = [pytest.mark.worker, pytest.mark.timeout(480)]

QUEUE = "rerank-killed"  # private: the session's rerank workers must not take these tasks
ASKS = 200
CLIENTS = 16
RERANK_TIMEOUT = 3.0
# The deadline is the feature: an answer waits on the reranker for KB_RERANK_TIMEOUT, plus queueing the
# task and noticing the deadline passed for a thread among 16 busy ones: a generous margin, from the setting.
RERANK_WAIT_BOUND = 2 * RERANK_TIMEOUT
_TASK_EVENT = re.compile(rb"(?:Task|Discarding revoked task:) rerank\.score\[([0-9a-f-]+)\](?: (received|succeeded))?")


def task_events(log_path: Path) -> dict[str, set[str]]:
    """Rerank task ids by what a worker's log says happened to them: received, succeeded, or
    discarded (expired or revoked, never run)."""
    events: dict[str, set[str]] = {"received": set(), "succeeded": set(), "discarded": set()}
    for task_id, event in _TASK_EVENT.findall(log_path.read_bytes()):
        events[event.decode() or "discarded"].add(task_id.decode())
    return events


def unfinished_tasks(log_path: Path) -> set[str]:
    """Rerank tasks a worker received and neither finished nor discarded: unacknowledged."""
    events = task_events(log_path)
    return events["received"] - events["succeeded"] - events["discarded"]


def hold_and_kill(worker: WorkerProcess, *, timeout: float) -> set[str]:
    """SIGKILL the worker at a moment it holds unacknowledged tasks; returns their ids."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        worker.freeze()
        if held := unfinished_tasks(worker.log_path):
            worker.kill()
            return held
        worker.thaw()
        time.sleep(0.02)
    raise TimeoutError(f"worker {worker.name} held no task for {timeout}s: see {worker.log_path}")


def test_killing_the_rerank_worker_mid_load_answers_every_question_once(
    settings: Settings, live_server: Any, secret_key: str, shop: KnowledgeBase, api: httpx.Client,
    start_worker: Callable[..., WorkerProcess], rerank_worker: WorkerProcess,
) -> None:
    """GIVEN 16 clients asking 200 questions whose reranks go to one worker on a private queue
    WHEN that worker is SIGKILLed a quarter of the way through and a new one is started
    THEN every ask is answered, reranked or degraded within the rerank deadline, and exactly once;
    the tasks the dead worker held come back to its successor, which drops them as expired; and the
    late reranks upgrade every degraded answer in place, without adding a row."""
    settings.KB_RERANK_TIMEOUT = RERANK_TIMEOUT
    settings.KB_RERANK_QUEUE = QUEUE
    # A short visibility timeout, so the dead worker's unacknowledged tasks come back within the test.
    env = {"KB_RERANK_QUEUE": QUEUE, "KB_BROKER_VISIBILITY_TIMEOUT": "15"}
    doomed = start_rerank_worker(start_worker, **env)
    # Late reranks run on the default queue; a threaded worker sends them to this test's rerank queue.
    # (rerank_worker serves those the session's CPU worker may take.)
    late_worker = start_worker("default", pool="threads", concurrency=4, KB_RERANK_QUEUE=QUEUE)
    # The lite engine embeds each document once and remembers it: before the load, not during it.
    documents = [faq_rerank_document(entry) for entry in FaqEntry.objects.filter(kb=shop)]
    assert rerank_score(requests=[RerankRequest(query="warm up", documents=documents)], timeout=120).status == "ok"

    started = time.monotonic()
    with AskLoad(base_url=live_server.url, key=secret_key, kb=shop.slug, questions=shop_questions(ASKS),
                 clients=CLIENTS) as load:
        # Kill while the worker holds tasks: received, not finished, not acknowledged. Frozen first, so a
        # task cannot finish between reading the log and the kill (a lite rerank takes milliseconds).
        wait_until(lambda: load.completed >= ASKS // 4, timeout=120, interval=0.02)
        held = hold_and_kill(doomed, timeout=60)
        killed_at = time.monotonic()
        successor = start_rerank_worker(start_worker, **env)
        successor_ready_at = time.monotonic()
        results = load.join(timeout=240)
    finished = time.monotonic()

    try:
        latencies = [result.seconds for result in results]
        statuses = Counter(result.rerank_status for result in results)
        print(f"\n{ASKS} asks in {finished - started:.1f}s: {dict(statuses)}; killed after "
              f"{killed_at - started:.1f}s holding {len(held)} tasks, successor ready "
              f"{successor_ready_at - killed_at:.1f}s later; latency p50 {percentile(latencies, 0.5):.2f}s "
              f"p95 {percentile(latencies, 0.95):.2f}s max {max(latencies):.2f}s")
        assert len(results) == ASKS
        assert [result for result in results if result.status != 200] == []
        assert set(statuses) <= {"ok", "degraded"}, statuses
        # The deadline holds: no answer waited on the reranker much past KB_RERANK_TIMEOUT. (Whole-ask
        # latency also counts recall on two shared cores: printed above, not judged; none hung, or
        # load.join would have failed.)
        rerank_waits = [result.body["timings_ms"]["rerank"] / 1000 for result in results
                        if result.body["cache"] == "miss"]
        assert max(rerank_waits) <= RERANK_WAIT_BOUND, sorted(rerank_waits)[-5:]
        # A degraded answer is one the deadline, the dead worker or the backlog limit cut short, never an error.
        assert {result.body["rerank"]["reason"] for result in results if result.rerank_status == "degraded"} <= {
            "timeout", "no_worker", "backlog"}

        # Redelivered after the visibility timeout, and expired by then: the successor drops them
        # unrun instead of scoring requests whose callers answered long ago.
        assert held
        wait_until(lambda: held <= task_events(successor.log_path)["discarded"], timeout=60)
        assert not held & task_events(successor.log_path)["succeeded"]

        # Every degraded answer is reranked late and updated in place.
        degraded = {result.body["question_id"] for result in results if result.rerank_status == "degraded"}
        wait_until(lambda: not Question.objects.filter(pk__in=degraded, rerank_status="degraded").exists(),
                   timeout=240)
        assert all(question.response["rerank"]["late"] for question in Question.objects.filter(pk__in=degraded))

        # One ticket, question and ask log per ask, whatever was redelivered or reranked late.
        questions = Question.objects.filter(ticket__kb=shop)
        assert set(questions.values_list("pk", flat=True)) == {result.body["question_id"] for result in results}
        assert Ticket.objects.filter(kb=shop).count() == AskLog.objects.filter(kb=shop).count() == ASKS
        assert not questions.exclude(state=Question.State.ANSWERED).exists()
        assert not questions.filter(response={}).exists()

        # The successor serves new questions reranked (a patient ask: this checks it works, not how fast).
        settings.KB_RERANK_TIMEOUT = 30
        answer = api.post("/api/v1/ask", json={"kb": shop.slug, "question": "退款要等多久"}).json()
        assert answer["rerank"]["status"] == "ok"
    finally:
        # Now, not at the end of the session: the successor's short visibility timeout would hand
        # other tests' long tasks out twice.
        successor.stop()
        late_worker.stop()
