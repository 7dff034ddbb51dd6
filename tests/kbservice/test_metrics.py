"""GET /metrics over real HTTP: counters shared through the real Redis, moved by real asks and reranks."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
import redis
from django.test import Client
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.utils import floatToGoString
from pytest_django.fixtures import Settings

from chat.models import ApiKey
from chat.services.keys import api_key_create
from kbservice.metrics.recording import RERANK_BUCKETS
from knowledge.models import KnowledgeBase
from rerank.batching import RerankRequest
from rerank.services import rerank_submit
from tests.chat.conftest import make_kb
from tests.conftest import WorkerProcess
from tests.helpers import wait_until
from tests.stack_plugin import restart_test_redis, suite_redis

KB = "metrics"
UNCONSUMED_QUEUE = "rerank-metrics-nobody"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(client: httpx.Client) -> Samples:
    response = client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=")
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(response.text) for sample in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def asks_moved(before: Samples, after: Samples) -> float:
    """All asks of this test's knowledge base, whatever their labels."""
    return sum(after[key] - before.get(key, 0.0) for key in after
               if key[0] == "kbservice_asks_total" and ("kb", KB) in key[1])


@pytest.fixture
def metrics_kb(transactional_db: None) -> KnowledgeBase:
    return make_kb(KB)


@pytest.fixture
def api(live_server: object, metrics_kb: KnowledgeBase) -> Iterator[httpx.Client]:
    _, key = api_key_create(name="metrics", kind=ApiKey.Kind.SECRET, kb=metrics_kb, scopes=["ask", "tickets"])
    with httpx.Client(base_url=str(live_server.url), headers={"Authorization": f"Bearer {key}"},  # type: ignore[attr-defined]
                      timeout=60) as client:
        yield client


@pytest.fixture
def scraper(live_server: object) -> Iterator[httpx.Client]:
    """Prometheus's view: no API key, from loopback."""
    with httpx.Client(base_url=str(live_server.url), timeout=30) as client:  # type: ignore[attr-defined]
        yield client


def _ask(api: httpx.Client, question: str) -> dict:
    response = api.post("/api/v1/ask", json={"kb": KB, "question": question})
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.worker
def test_an_answer_a_cache_hit_and_a_degraded_ask_move_the_counters_exactly(
    api: httpx.Client, rerank_worker: WorkerProcess, settings: Settings, redis_client: redis.Redis
) -> None:
    before = scrape(api)
    assert value(before, "kbservice_redis_up") == 1
    assert value(before, "kbservice_rerank_workers") >= 1

    answered = _ask(api, "How can I delete my account?")
    assert (answered["cache"], answered["rerank"]["status"]) == ("miss", "ok")
    after_answer = scrape(api)
    assert moved(before, after_answer, "kbservice_asks_total",
                 kb=KB, decision=answered["decision"], cache="miss", rerank="ok") == 1
    assert asks_moved(before, after_answer) == 1
    assert moved(before, after_answer, "kbservice_rerank_requests_total", outcome="ok") == 1
    assert moved(before, after_answer, "kbservice_rerank_duration_seconds_count") == 1
    waited = moved(before, after_answer, "kbservice_rerank_duration_seconds_sum")
    assert waited == pytest.approx(answered["timings_ms"]["rerank"] / 1000, abs=0.05)
    for bound in RERANK_BUCKETS:  # the one observation sits in every bucket at or above its value
        assert moved(before, after_answer, "kbservice_rerank_duration_seconds_bucket",
                     le=floatToGoString(bound)) == (1 if waited <= bound else 0)
    # The ask, and the scrape before it (a scrape is counted once it has answered).
    assert moved(before, after_answer, "kbservice_http_requests_total", method="POST", status="200") == 1
    assert moved(before, after_answer, "kbservice_http_requests_total", method="GET", status="200") == 1

    assert _ask(api, "How can I delete my account")["cache"] == "hit"
    after_hit = scrape(api)
    assert moved(after_answer, after_hit, "kbservice_asks_total",
                 kb=KB, decision=answered["decision"], cache="hit", rerank="ok") == 1
    assert asks_moved(after_answer, after_hit) == 1
    assert moved(after_answer, after_hit, "kbservice_rerank_requests_total", outcome="ok") == 0
    assert moved(after_answer, after_hit, "kbservice_rerank_duration_seconds_count") == 0

    # Reranks routed to a queue no worker consumes: the same as every rerank worker being down.
    settings.KB_RERANK_TIMEOUT = 1.0
    settings.KB_RERANK_QUEUE = UNCONSUMED_QUEUE
    try:
        degraded = _ask(api, "I forgot my password")
        assert (degraded["rerank"]["status"], degraded["decision"]) == ("degraded", "suggest")
        after_degraded = scrape(api)
        assert moved(after_hit, after_degraded, "kbservice_asks_total",
                     kb=KB, decision="suggest", cache="miss", rerank="degraded") == 1
        assert asks_moved(after_hit, after_degraded) == 1
        # No worker is ready on that queue: the ask did not queue a rerank, nor wait for one.
        assert moved(after_hit, after_degraded, "kbservice_rerank_requests_total", outcome="no_worker") == 1
        assert value(after_degraded, "kbservice_celery_queue_length", queue=UNCONSUMED_QUEUE) == 0
        assert value(after_degraded, "kbservice_rerank_workers") == 0
    finally:
        redis_client.delete(UNCONSUMED_QUEUE)


def test_error_responses_are_counted_by_status_and_code(api: httpx.Client) -> None:
    before = scrape(api)
    invalid = api.post("/api/v1/ask", json={"kb": KB, "question": ""})
    unrouted = api.get("/api/v1/no-such-thing")
    no_ticket = api.get(f"/api/v1/tickets/{uuid.uuid4()}")
    assert (invalid.status_code, unrouted.status_code, no_ticket.status_code) == (400, 404, 404)
    assert invalid.json()["error"]["code"] == "invalid"
    after = scrape(api)

    assert moved(before, after, "kbservice_api_errors_total", status="400", code="invalid") == 1
    # One 404 from Django's URL resolver, one from a DRF view: both counted under the same code.
    assert moved(before, after, "kbservice_api_errors_total", status="404", code="not_found") == 2
    assert moved(before, after, "kbservice_http_requests_total", method="POST", status="400") == 1
    assert moved(before, after, "kbservice_http_requests_total", method="GET", status="404") == 2
    assert asks_moved(before, after) == 0


def test_queue_length_counts_messages_that_nobody_consumes(
    scraper: httpx.Client, settings: Settings, redis_client: redis.Redis
) -> None:
    settings.KB_RERANK_QUEUE = UNCONSUMED_QUEUE
    try:
        assert value(scrape(scraper), "kbservice_celery_queue_length", queue=UNCONSUMED_QUEUE) == 0
        for _ in range(3):
            rerank_submit(requests=[RerankRequest(query="refund", documents=["Refunds take 3 days."])])
        samples = scrape(scraper)
        assert value(samples, "kbservice_celery_queue_length", queue=UNCONSUMED_QUEUE) == 3
        assert ("kbservice_celery_queue_length", frozenset({("queue", "default")})) in samples
    finally:
        redis_client.delete(UNCONSUMED_QUEUE)


def test_openmetrics_is_served_when_the_scraper_asks_for_it(scraper: httpx.Client) -> None:
    response = scraper.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    families = {family.name: family.type for family in parse_openmetrics(response.text)}
    assert families["kbservice_asks"] == "counter"
    assert families["kbservice_rerank_duration_seconds"] == "histogram"
    assert families["kbservice_celery_queue_length"] == "gauge"


def test_with_a_token_set_scrapers_must_send_it(scraper: httpx.Client, settings: Settings) -> None:
    settings.KB_METRICS_TOKEN = "scrape-token-for-tests"
    missing = scraper.get("/metrics")  # from loopback, which no longer suffices
    assert missing.status_code == 401
    assert missing.json()["error"]["code"] == "not_authenticated"
    assert missing.headers["www-authenticate"].startswith("Bearer")
    wrong = scraper.get("/metrics", headers={"Authorization": "Bearer scrape-token-for-test"})
    assert wrong.status_code == 401
    allowed = scraper.get("/metrics", headers={"Authorization": "Bearer scrape-token-for-tests"})
    assert allowed.status_code == 200 and "kbservice_redis_up 1.0" in allowed.text


def test_without_a_token_only_direct_requests_from_private_addresses_may_scrape(client: Client) -> None:
    public = client.get("/metrics", REMOTE_ADDR="8.8.8.8")
    assert public.status_code == 403
    assert public.json()["error"]["code"] == "permission_denied"
    assert client.get("/metrics", REMOTE_ADDR="10.20.30.40").status_code == 200
    # Through a proxy every caller seems to come from the proxy's private address.
    proxied = client.get("/metrics", REMOTE_ADDR="10.20.30.40", HTTP_X_FORWARDED_FOR="8.8.8.8")
    assert proxied.status_code == 403


@pytest.mark.worker
def test_with_redis_stopped_asks_still_answer_and_metrics_say_redis_is_down(
    api: httpx.Client, rerank_worker: WorkerProcess, settings: Settings
) -> None:
    settings.KB_RERANK_TIMEOUT = 1.0
    suite_redis().stop()
    try:
        started = time.monotonic()
        body = _ask(api, "How do I delete my account?")
        elapsed = time.monotonic() - started
        assert body["answer"]["external_id"] == "delete-account"
        assert body["rerank"]["status"] == "degraded" and body["cache"] == "miss"
        # Not hung on Redis: bounded by its connect timeouts and the rerank deadline, with a wide margin.
        bound = 3 * (settings.CELERY_BROKER_CONNECTION_TIMEOUT + settings.CELERY_REDIS_SOCKET_CONNECT_TIMEOUT
                     + settings.KB_RERANK_TIMEOUT)
        assert elapsed < bound, elapsed
        samples = scrape(api)
        assert samples == {("kbservice_redis_up", frozenset()): 0.0}
    finally:
        restart_test_redis()

    # Reranking and counting resume by themselves, nothing restarted: the restarted Redis starts
    # empty, so any count is a new one.
    settings.KB_RERANK_TIMEOUT = 5.0

    def reranked_and_counted() -> bool:
        reranked = _ask(api, "How do I delete my account?")["rerank"]["status"] == "ok"
        return reranked and asks_moved({}, scrape(api)) >= 1

    wait_until(reranked_and_counted, timeout=90, interval=1)
