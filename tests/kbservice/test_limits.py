"""Limits are refused with a clear 4xx in the one error shape before any heavy work starts: the body is
not read, the question never reaches recall, and no rerank task reaches the queue."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import redis
from django.contrib.auth.models import User
from django.test import Client

from chat.models import ApiKey, AskLog, Question, Ticket, WorkbenchRun
from chat.services.keys import api_key_create
from knowledge.services import knowledge_base_create

pytestmark = pytest.mark.django_db(transaction=True)

# No worker consumes this queue: a task that was published stays in its Redis list.
IDLE_QUEUE = "rerank-limits-idle"


@pytest.fixture
def idle_rerank_queue(settings: Any, redis_client: redis.Redis) -> Iterator[Callable[[], int]]:
    """Rerank tasks go to a queue no worker reads; the fixture returns how many are waiting there."""
    settings.KB_RERANK_QUEUE = IDLE_QUEUE
    settings.KB_RERANK_TIMEOUT = settings.KB_RERANK_API_TIMEOUT = 0.3
    redis_client.delete(IDLE_QUEUE)
    yield lambda: int(redis_client.llen(IDLE_QUEUE))
    redis_client.delete(IDLE_QUEUE)


@pytest.fixture
def api(live_server: Any) -> Iterator[httpx.Client]:
    kb = knowledge_base_create(slug="shop", name="Shop")
    _, raw = api_key_create(name="server", kind=ApiKey.Kind.SECRET, kb=kb, scopes=["ask", "tickets", "rerank"])
    with httpx.Client(base_url=live_server.url, headers={"Authorization": f"Bearer {raw}"}, timeout=30) as client:
        yield client


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}, body
    return dict(body["error"])


def test_an_accepted_rerank_does_reach_the_idle_queue(api: httpx.Client, idle_rerank_queue: Callable[[], int]) -> None:
    """The control for the tests below: a request inside the limits is published (and, with no
    worker on that queue, answered 503 once KB_RERANK_API_TIMEOUT passes)."""
    response = api.post("/v1/rerank", json={"query": "q", "documents": ["d"]})
    assert response.status_code == 503 and error_of(response)["code"] == "rerank_unavailable"
    assert idle_rerank_queue() == 1


def test_a_call_of_exactly_the_character_budget_is_accepted(
    api: httpx.Client, idle_rerank_queue: Callable[[], int], settings: Any,
) -> None:
    settings.KB_RERANK_MAX_REQUEST_CHARS = 100
    response = api.post("/v1/rerank/batch", json={"queries": ["q" * 10, "q" * 10],
                                                   "documents": [["d" * 30, "d" * 20], ["d" * 20]]})
    # (10 * 2 + 30 + 20) + (10 + 20) = 100: published, then 503 from the idle queue.
    assert response.status_code == 503, response.text
    assert idle_rerank_queue() == 1


@pytest.mark.parametrize(
    ("path", "payload", "message"),
    [
        ("/v1/rerank", {"query": "q", "documents": ["d"] * 1001}, "no more than 1000"),
        ("/v1/rerank", {"query": "q", "documents": ["x" * 20_001]}, "at most 20000 characters"),
        ("/v1/rerank/batch", {"queries": ["q"] * 33, "documents": [["d"]] * 33}, "no more than 32"),
        ("/v1/rerank/batch", {"queries": ["q"], "documents": [["d"] * 1001]}, "no more than 1000"),
        ("/v1/rerank/batch", {"queries": ["q1", "q2"], "documents": [["d"] * 3, ["d"] * 3]},
         "6 documents in all; the limit is 5 (KB_RERANK_MAX_BATCH_DOCUMENTS)"),
        # The query is read once per document: 10 * 2 + 2 * 41 = 102.
        ("/v1/rerank", {"query": "q" * 10, "documents": ["d" * 41] * 2},
         "asks to score 102 characters (each query counted once per document); the limit is 100"),
        ("/v1/rerank/batch", {"queries": ["q" * 10, "問" * 10], "documents": [["d" * 45], ["文" * 46]]},
         "asks to score 111 characters (each query counted once per document); the limit is 100"),
    ],
    ids=["documents", "document-chars", "batch-queries", "batch-documents-per-query", "batch-documents-in-all",
         "characters", "batch-characters"],
)
def test_oversized_rerank_requests_never_reach_the_worker_queue(
    api: httpx.Client, idle_rerank_queue: Callable[[], int], settings: Any, path: str, payload: dict[str, Any],
    message: str,
) -> None:
    settings.KB_RERANK_MAX_BATCH_DOCUMENTS = 5
    settings.KB_RERANK_MAX_REQUEST_CHARS = 100
    response = api.post(path, json=payload)
    assert response.status_code == 400, response.text
    error = error_of(response)
    assert error["code"] == "invalid"
    assert message in json.dumps(error["details"]["fields"]), error
    assert idle_rerank_queue() == 0


@pytest.mark.parametrize("path", ["/api/v1/ask", "/api/v1/tickets"])
def test_a_question_over_the_limit_is_refused_before_recall(
    api: httpx.Client, idle_rerank_queue: Callable[[], int], settings: Any, path: str,
) -> None:
    settings.KB_MAX_QUESTION_CHARS = 40
    response = api.post(path, json={"kb": "shop", "question": "退" * 41})
    assert response.status_code == 400, response.text
    assert error_of(response)["details"]["fields"]["question"] == ["is 41 characters; the limit is 40"]
    assert (AskLog.objects.count(), Ticket.objects.count(), Question.objects.count()) == (0, 0, 0)
    assert idle_rerank_queue() == 0


def test_an_oversized_api_body_is_413_in_the_error_shape(
    api: httpx.Client, idle_rerank_queue: Callable[[], int], settings: Any,
) -> None:
    settings.KB_MAX_BODY_BYTES = 4096
    body = json.dumps({"query": "q", "documents": ["d" * 1000] * 5})
    response = api.post("/v1/rerank", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    error = error_of(response)
    assert error["code"] == "request_too_large"
    assert error["details"] == {"size": len(body), "limit": 4096}
    assert "KB_MAX_BODY_BYTES" in error["message"]
    assert idle_rerank_queue() == 0


def test_the_413_comes_before_the_body_is_read(api: httpx.Client, settings: Any) -> None:
    """Only the headers are sent: the answer arrives without the server waiting for the 10 MB body."""
    settings.KB_MAX_BODY_BYTES = 4096
    url = urlsplit(str(api.base_url))
    with socket.create_connection((url.hostname, url.port), timeout=10) as conn:
        conn.sendall((f"POST /api/v1/ask HTTP/1.1\r\nHost: {url.netloc}\r\nContent-Type: application/json\r\n"
                      f"Authorization: {api.headers['Authorization']}\r\nContent-Length: 10000000\r\n\r\n").encode())
        answer = b""
        while b"request_too_large" not in answer and (chunk := conn.recv(65536)):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 413"), answer
    assert b'"code": "request_too_large"' in answer


def test_an_oversized_console_form_is_413_and_runs_nothing(
    live_server: Any, staff_user: Callable[..., User], settings: Any,
) -> None:
    settings.KB_MAX_BODY_BYTES = 4096
    session = Client()
    session.force_login(staff_user("admin"))
    response = session.post("/console/workbench/", {"mode": "rerank", "query": "q", "documents": "d\n\n" * 2000})
    assert response.status_code == 413
    assert response.content.decode().startswith("The request body is ")
    assert "the limit is 4,096 bytes (KB_MAX_BODY_BYTES)" in response.content.decode()
    assert WorkbenchRun.objects.count() == 0


def test_bodies_within_the_limit_still_pass(api: httpx.Client, settings: Any) -> None:
    settings.KB_MAX_BODY_BYTES = 4096
    response = api.post("/api/v1/ask", json={"kb": "shop", "question": ""})
    assert response.status_code == 400 and "question" in error_of(response)["details"]["fields"]


def test_json_nested_too_deeply_is_a_400_not_a_500(api: httpx.Client) -> None:
    response = api.post("/v1/rerank", content="[" * 100_000, headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    assert error_of(response)["code"] == "parse_error"
