import pytest
from django.test import Client

from tests.conftest import WorkerProcess, start_rerank_worker
from tests.helpers import wait_until


def test_healthz_answers_without_dependencies(client: Client) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


@pytest.mark.worker
def test_readyz_needs_a_rerank_worker(transactional_db: None, client: Client, start_worker: object) -> None:
    before = client.get("/readyz")
    body = before.json()
    assert body["checks"]["database"]["ok"] and body["checks"]["database"]["pgvector"]
    assert body["checks"]["redis"]["ok"] and body["checks"]["broker"]["ok"]
    if before.status_code == 503:
        assert not body["checks"]["rerank_worker"]["ok"]

    worker: WorkerProcess = start_rerank_worker(start_worker)  # type: ignore[arg-type]
    wait_until(lambda: client.get("/readyz").status_code == 200, timeout=30)
    workers = client.get("/readyz").json()["checks"]["rerank_worker"]["workers"]
    assert any(w["engine"] == "lite" for w in workers)

    worker.stop()
    wait_until(lambda: client.get("/readyz").status_code == 503, timeout=30)


def test_api_errors_use_the_one_error_shape(client: Client) -> None:
    response = client.get("/api/v1/no-such-thing")
    assert response.status_code == 404
    assert response.json() == {"error": {"code": "not_found", "message": "Not found.", "details": {}}}
