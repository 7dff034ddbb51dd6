"""Redis (broker, results, answer cache, rate limits) stops for ten seconds while customers ask."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from pytest_django.fixtures import Settings

from chat.models import ApiKey
from chat.services.keys import api_key_create
from knowledge.models import FaqEmbedding, KnowledgeBase
from knowledge.services import faq_entry_create
from tests.conftest import WorkerProcess, start_rerank_worker
from tests.helpers import wait_until
from tests.reliability.load import AskLoad, shop_questions
from tests.stack_plugin import restart_test_redis, suite_redis

pytestmark = [pytest.mark.worker, pytest.mark.timeout(240)]

QUEUE = "rerank-redis-outage"
OUTAGE_SECONDS = 10
RERANK_TIMEOUT = 3.0
THROTTLE_RATE = "5/min"


def _ask(api: httpx.Client, question: str) -> dict[str, Any]:
    response = api.post("/api/v1/ask", json={"kb": "shop", "question": question})
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_asks_are_answered_through_a_redis_outage_and_everything_recovers_by_itself(
    settings: Settings, live_server: Any, secret_key: str, shop: KnowledgeBase, api: httpx.Client,
    start_worker: Callable[..., WorkerProcess], cpu_worker: WorkerProcess,
) -> None:
    """GIVEN asks reranked by a worker on a private queue, answers cached, keys rate-limited
    WHEN Redis stops for ten seconds while 8 clients keep asking, then starts again (empty)
    THEN every ask during the outage is answered 200, degraded within the rerank deadline, with the
    cache and the rate limit failing open; and afterwards, with no process restarted, answers are
    reranked and cached again, rate limits apply, readiness is back and the CPU worker embeds."""
    settings.KB_RERANK_TIMEOUT = RERANK_TIMEOUT
    settings.KB_RERANK_QUEUE = QUEUE
    start_rerank_worker(start_worker, KB_RERANK_QUEUE=QUEUE)
    question = "退款几天能到账"
    # Patient while the fresh worker embeds the knowledge base's documents for the first time.
    settings.KB_RERANK_TIMEOUT = 60
    assert _ask(api, question)["rerank"]["status"] == "ok"
    settings.KB_RERANK_TIMEOUT = RERANK_TIMEOUT
    assert _ask(api, question)["cache"] == "hit"
    # The outage load alone is far past this rate: a 429 would mean the limit failed closed.
    settings.KB_THROTTLE_RATE = THROTTLE_RATE

    suite_redis().stop()
    try:
        outage_started = time.monotonic()
        with AskLoad(base_url=live_server.url, key=secret_key, kb=shop.slug,
                     questions=itertools.cycle(shop_questions(24)), clients=8) as load:
            healthz = api.get("/healthz")
            readyz = api.get("/readyz")
            time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - outage_started)))
            load.stop()
            results = load.join(timeout=60)
    finally:
        restart_test_redis()
    restarted_at = time.monotonic()

    assert healthz.status_code == 200
    assert readyz.status_code == 503 and not readyz.json()["checks"]["redis"]["ok"]
    assert len(results) > int(THROTTLE_RATE.split("/")[0])
    assert [result for result in results if result.status != 200] == []
    assert {(result.rerank_status, result.body["rerank"]["reason"], result.body["cache"]) for result in results} == {
        ("degraded", "broker_unavailable", "miss")}
    latencies = [result.seconds for result in results]
    # The deadline is the feature: the rerank deadline plus one try of the broker (its connection
    # timeout, twice over as a margin for recall and the writes on two shared cores).
    assert max(latencies) <= RERANK_TIMEOUT + 2 * settings.CELERY_BROKER_CONNECTION_TIMEOUT, sorted(latencies)[-5:]

    # Back without restarting anything: the rerank worker reconnects to the broker by itself.
    settings.KB_THROTTLE_RATE = "600/min"
    wait_until(lambda: _ask(api, "退款要等几天")["rerank"]["status"] == "ok", timeout=60, interval=1)
    recovered_after = time.monotonic() - restarted_at
    assert _ask(api, "退款要等几天")["cache"] == "hit"
    wait_until(lambda: api.get("/readyz").status_code == 200, timeout=60)

    # Rate limits count again (a fresh key: Redis came back empty, and so did every count).
    settings.KB_THROTTLE_RATE = THROTTLE_RATE
    _, raw_key = api_key_create(name="after-outage", kind=ApiKey.Kind.SECRET, kb=shop, scopes=["ask"])
    statuses = [api.post("/api/v1/ask", json={}, headers={"Authorization": f"Bearer {raw_key}"}).status_code
                for _ in range(6)]
    assert statuses == [400] * 5 + [429]

    # The CPU worker reconnected too: a new entry gets its embedding.
    entry = faq_entry_create(kb=shop, data={"question": "发票怎么开？", "answer": "在订单详情页申请电子发票。"})
    wait_until(lambda: FaqEmbedding.objects.filter(entry=entry).exists(), timeout=60)
    print(f"\n{len(results)} asks during the outage, latency max {max(latencies):.2f}s; "
          f"reranked again {recovered_after:.1f}s after Redis returned")
