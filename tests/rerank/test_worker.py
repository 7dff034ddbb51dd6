"""The rerank task through the real broker and real Celery workers (lite engine)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
from pytest_django.fixtures import Settings

from rerank.batching import RerankRequest
from rerank.services import rerank_score, rerank_submit
from tests.conftest import WorkerProcess, start_rerank_worker
from tests.helpers import wait_until

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

DOCUMENTS_TO_KILL_IN = 12
DOCUMENTS = ["退款审核通过后原路退回，银行卡3到5个工作日到账。", "在订单详情页点击修改地址。",
             "Open Settings, Privacy, then Delete account."]


def test_a_rerank_task_returns_scores_in_input_order(
    settings: Settings, start_worker: Callable[..., WorkerProcess]
) -> None:
    settings.KB_RERANK_QUEUE = "rerank-scores"
    start_rerank_worker(start_worker, KB_RERANK_QUEUE="rerank-scores")
    outcome = rerank_score(requests=[RerankRequest(query="退款几天到账", documents=DOCUMENTS),
                                     RerankRequest(query="delete my account", documents=DOCUMENTS)], timeout=60)
    assert outcome.status == "ok" and outcome.engine == "lite"
    first, second = outcome.scores
    assert len(first) == len(second) == 3
    assert max(range(3), key=first.__getitem__) == 0
    assert max(range(3), key=second.__getitem__) == 2


def test_concurrent_requests_share_engine_calls(
    settings: Settings, start_worker: Callable[..., WorkerProcess]
) -> None:
    settings.KB_RERANK_QUEUE = "rerank-batch"
    start_rerank_worker(start_worker, KB_RERANK_QUEUE="rerank-batch", KB_RERANK_BATCH_WAIT_MS="300")

    def one(n: int) -> int:
        outcome = rerank_score(requests=[RerankRequest(query=f"question {n}", documents=[f"document {n}", "x"])],
                               timeout=60)
        assert outcome.status == "ok"
        return outcome.batch_requests

    with ThreadPoolExecutor(max_workers=8) as pool:
        sizes = list(pool.map(one, range(8)))
    assert max(sizes) > 1, sizes


def test_a_worker_killed_mid_task_loses_nothing(
    settings: Settings, start_worker: Callable[..., WorkerProcess]
) -> None:
    settings.KB_RERANK_QUEUE = "rerank-redeliver"
    settings.KB_RERANK_EXPIRES = 900  # on a loaded machine the successor may take a while to start
    # The visibility timeout must outlast the task, or a live worker's task would be handed out again.
    env = {"KB_RERANK_QUEUE": "rerank-redeliver", "KB_BROKER_VISIBILITY_TIMEOUT": "40"}
    doomed = start_rerank_worker(start_worker, **env)
    # Enough distinct documents that scoring outlasts the kill (a second or so on the lite engine), few
    # enough that the successor scores them well within the visibility timeout even on a loaded machine:
    # past it, the task would be handed out again, to the successor itself (50 took 121 s under load).
    documents = [f"文档 {n}：" + "订单发货后请在物流页面查看轨迹，如有异常请联系客服处理。" * 8 + f" item {n}"
                 for n in range(DOCUMENTS_TO_KILL_IN)]
    result = rerank_submit(requests=[RerankRequest(query="物流异常怎么办", documents=documents)])
    wait_until(lambda: b"rerank.score" in doomed.log_path.read_bytes() and b"received" in doomed.log_path.read_bytes(),
               timeout=30, interval=0.05)
    os.kill(doomed.process.pid, signal.SIGKILL)
    doomed.process.wait()
    assert not result.ready()

    # The successor takes the unacknowledged task once the visibility timeout has passed; the wait
    # for it is generous, and what is judged is counted: deliveries and runs of this task.
    successor = start_rerank_worker(start_worker, **env)
    value = result.get(timeout=int(env["KB_BROKER_VISIBILITY_TIMEOUT"]) + 180)
    assert len(value["scores"][0]) == DOCUMENTS_TO_KILL_IN

    def events(worker: WorkerProcess, event: str) -> int:
        return worker.log_path.read_bytes().count(f"Task rerank.score[{result.id}] {event}".encode())

    # Celery logs "succeeded" just after storing the result we already read.
    wait_until(lambda: events(successor, "succeeded") == 1, timeout=60)
    assert (events(doomed, "received"), events(doomed, "succeeded")) == (1, 0)
    assert (events(successor, "received"), events(successor, "succeeded")) == (1, 1)


def test_a_stopped_worker_means_unavailable_within_the_deadline(
    settings: Settings, start_worker: Callable[..., WorkerProcess]
) -> None:
    settings.KB_RERANK_QUEUE = "rerank-stopped"
    worker = start_rerank_worker(start_worker, KB_RERANK_QUEUE="rerank-stopped")
    request = RerankRequest(query="q", documents=["d"])
    assert rerank_score(requests=[request], timeout=30).status == "ok"

    worker.stop()
    timeout = 1.0
    started = time.monotonic()
    outcome = rerank_score(requests=[request], timeout=timeout)
    waited = time.monotonic() - started
    assert outcome.status == "unavailable" and outcome.reason == "timeout"
    # The deadline is the feature: it fired, and not before its time (a generous margin after it).
    assert timeout <= waited < 5 * timeout, waited
