"""The production rerank path end to end: /api/v1/ask → the broker → a real Celery rerank worker
running the Qwen3 transformers engine on the tiny Qwen3 model → the answer. Scores are the model
card's formula; concurrent asks share engine calls (micro-batches, counted in the worker's own log);
/readyz names the engine and the model."""

from __future__ import annotations

import ast
import re
import socket
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from pytest_django.fixtures import Settings

from chat.services.ask import faq_rerank_document
from knowledge.models import FaqEntry, KnowledgeBase
from rerank.batching import RerankRequest
from rerank.services import rerank_score
from tests.conftest import WorkerProcess, start_rerank_worker
from tests.rerank.conftest import reference_scorer

pytestmark = pytest.mark.worker

QUEUE = "rerank-qwen3"
# Long enough that asks sent together land in one engine call; evidence of it is counted, not timed.
BATCH_WAIT_MS = "300"


@pytest.fixture(scope="module")
def qwen3_worker(session_worker: Callable[..., WorkerProcess], tiny_qwen3: Path) -> Iterator[WorkerProcess]:
    worker = start_rerank_worker(session_worker, KB_RERANK_QUEUE=QUEUE, KB_RERANK_BACKEND="transformers",
                                 KB_RERANK_MODEL=str(tiny_qwen3), KB_RERANK_BATCH_WAIT_MS=BATCH_WAIT_MS)
    yield worker
    worker.stop()


@pytest.fixture
def on_qwen3(settings: Settings, qwen3_worker: WorkerProcess) -> WorkerProcess:
    settings.KB_RERANK_QUEUE = QUEUE
    settings.KB_RERANK_TIMEOUT = 120  # generous: two shared cores; the deadline is not what is tested here
    return qwen3_worker


def _task_results(worker: WorkerProcess) -> list[dict[str, Any]]:
    """The return value of every rerank task the worker finished, as Celery logged it."""
    log = worker.log_path.read_text(errors="replace")
    values = re.findall(r"Task rerank\.score\[[^\]]+\] succeeded in \S+: (\{.*\})", log)
    return [ast.literal_eval(value) for value in values]


def _ask(api: httpx.Client, question: str) -> dict[str, Any]:
    response = api.post("/api/v1/ask", json={"kb": "shop", "question": question})
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_an_ask_is_reranked_by_qwen3_in_the_worker_with_the_reference_scores(
    api: httpx.Client, shop: KnowledgeBase, on_qwen3: WorkerProcess, tiny_qwen3: Path
) -> None:
    question = "How can I delete my account?"
    body = _ask(api, question)

    assert body["rerank"]["status"] == "ok", body["rerank"]
    assert (body["rerank"]["engine"], body["rerank"]["model"]) == ("transformers", str(tiny_qwen3))
    reference = reference_scorer(tiny_qwen3)
    shown = [body["answer"], *body["alternatives"]]
    assert len(shown) >= 2
    for item in shown:
        entry = FaqEntry.objects.get(pk=item["id"])
        expected = reference(shop.rerank_instruction, question, faq_rerank_document(entry))
        assert item["scores"]["rerank"] == pytest.approx(expected, abs=1e-4), item["external_id"]
    # Shown best first, by the model's score.
    scores = [item["scores"]["rerank"] for item in shown]
    assert scores == sorted(scores, reverse=True)
    # The engine was loaded once, by the worker's start-up, not per task.
    assert on_qwen3.log_path.read_text().count("rerank worker ready: transformers") == 1


def test_concurrent_asks_share_qwen3_engine_calls(
    api: httpx.Client, shop: KnowledgeBase, on_qwen3: WorkerProcess
) -> None:
    """GIVEN 8 different questions asked at once, a few rounds at most WHEN the worker's 8 threads hand
    their tasks to the micro-batcher THEN some engine call scored more than one ask (its tasks report
    it), and every ask was scored by exactly one task."""
    before = len(_task_results(on_qwen3))
    rounds = 0
    batched: list[int] = []
    while not batched and rounds < 3:
        questions = [f"How do I delete my account, case {rounds}-{n}?" for n in range(8)]
        with ThreadPoolExecutor(max_workers=8) as pool:
            bodies = list(pool.map(lambda q: _ask(api, q), questions))
        assert {body["rerank"]["status"] for body in bodies} == {"ok"}
        rounds += 1
        results = _task_results(on_qwen3)[before:]
        assert len(results) == 8 * rounds  # one rerank task per ask, none redone
        batched = [r["batch_requests"] for r in results if r["batch_requests"] > 1]
    assert batched, f"no engine call scored more than one ask in {rounds} rounds of 8 concurrent asks"


def test_readyz_names_the_qwen3_engine_and_model(
    api: httpx.Client, on_qwen3: WorkerProcess, tiny_qwen3: Path
) -> None:
    ready = api.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"]["rerank_worker"]["workers"] == [
        {"hostname": f"{on_qwen3.name}@{socket.gethostname()}", "engine": "transformers", "model": str(tiny_qwen3)}]


def test_an_engine_failure_in_the_worker_reaches_the_caller_as_an_error(on_qwen3: WorkerProcess) -> None:
    """A request the engine refuses (an instruction that leaves no room for a document) fails its task:
    the caller gets reason "error", not scores, and the worker logs the task as failed."""
    crowding = RerankRequest(query="q", documents=["Refunds take five working days."],
                             instruction="Judge carefully. " * 3000)
    outcome = rerank_score(requests=[crowding], timeout=120)
    assert (outcome.status, outcome.reason, outcome.scores) == ("unavailable", "error", [])
    log = on_qwen3.log_path.read_text(errors="replace")
    assert re.search(rf"Task rerank\.score\[{outcome.task_id}\] raised unexpected: ValueError", log), log[-2000:]
