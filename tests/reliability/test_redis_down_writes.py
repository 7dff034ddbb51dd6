"""With Redis down, ticket questions and entry edits still work: tickets are answered inline (no
broker to queue them on), edits are saved and found by full text at once, and their embeddings are
caught up by `kb_reembed --missing` once Redis is back."""

from __future__ import annotations

from collections.abc import Iterator
from io import StringIO
from typing import Any

import httpx
import pytest
from django.core.management import call_command

from chat.models import ApiKey
from chat.services.keys import api_key_create
from knowledge.models import FaqEmbedding, FaqEntry, KnowledgeBase
from knowledge.selectors import faq_fulltext_search
from tests.conftest import WorkerProcess
from tests.helpers import wait_until
from tests.stack_plugin import restart_test_redis, suite_redis

pytestmark = [pytest.mark.worker, pytest.mark.timeout(300)]


@pytest.fixture
def redis_down() -> Iterator[None]:
    suite_redis().stop()
    try:
        yield
    finally:
        restart_test_redis()


def _questions(api: httpx.Client, ticket: str) -> list[dict[str, Any]]:
    response = api.get(f"/api/v1/tickets/{ticket}")
    assert response.status_code == 200, response.text
    return list(response.json()["questions"])


def test_ticket_questions_are_answered_inline_while_redis_is_down(
    api: httpx.Client, shop: KnowledgeBase, redis_down: None
) -> None:
    created = api.post("/api/v1/tickets", json={"kb": "shop", "question": "退款多久能到账？"})
    assert created.status_code == 202, created.text
    ticket = created.json()["ticket"]
    follow_up = api.post(f"/api/v1/tickets/{ticket}/questions", json={"question": "How can I delete my account?"})
    assert follow_up.status_code == 202, follow_up.text

    # Answered before the reply came back: no worker could have been handed them.
    first, second = _questions(api, ticket)
    assert (first["state"], first["answer"]["external_id"]) == ("answered", "refund")
    assert (second["state"], second["answer"]["external_id"]) == ("answered", "delete-account")
    assert {first["rerank"]["reason"], second["rerank"]["reason"]} == {"broker_unavailable"}


def test_an_entry_edit_is_saved_while_redis_is_down_and_embedded_after(
    api: httpx.Client, shop: KnowledgeBase, redis_down: None, cpu_worker: WorkerProcess
) -> None:
    entry = FaqEntry.objects.get(kb=shop, external_id="refund")
    _, writer = api_key_create(name="curator", kind=ApiKey.Kind.SECRET, kb=shop, scopes=["knowledge:write"])
    response = api.patch(f"/api/v1/kbs/shop/entries/{entry.pk}", headers={"Authorization": f"Bearer {writer}"},
                         json={"version": entry.version, "summary": "退款到账时效，支付宝余额即时到账"})
    assert response.status_code == 200, response.text
    entry.refresh_from_db()
    assert (entry.version, entry.summary) == (2, "退款到账时效，支付宝余额即时到账")
    assert faq_fulltext_search(kb=shop, query="支付宝余额", k=3)[0].entry_id == entry.pk
    fresh = FaqEmbedding.objects.filter(entry=entry, phrasing=0, content_hash=entry.content_hash)
    assert not fresh.exists()  # the summary is embedded, and the new one could not be queued

    restart_test_redis()
    call_command("kb_reembed", "--kb", "shop", "--missing", stdout=StringIO(), stderr=StringIO())
    wait_until(fresh.exists, timeout=120)
