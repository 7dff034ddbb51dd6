"""Archiving an entry, one over the API or several in the admin, stops cached answers from serving it."""

from __future__ import annotations

import httpx
import pytest
from django.test import Client

from chat.models import ApiKey
from chat.services.keys import api_key_create
from knowledge.models import FaqEntry, KnowledgeBase
from tests.conftest import WorkerProcess

pytestmark = pytest.mark.worker


def _ask(api: httpx.Client, question: str) -> dict:
    response = api.post("/api/v1/ask", json={"kb": "shop", "question": question})
    assert response.status_code == 200, response.text
    return response.json()


def _cached(api: httpx.Client, question: str, external_id: str) -> None:
    """The question is answered from ``external_id`` and that answer is now in the cache."""
    first, second = _ask(api, question), _ask(api, question)
    assert (first["answer"]["external_id"], second["cache"]) == (external_id, "hit"), (first, second)


def _served_ids(body: dict) -> set[str]:
    return {body["answer"]["external_id"], *(alt["external_id"] for alt in body["alternatives"])}


def test_archiving_one_entry_over_the_api_invalidates_its_cached_answer(
    api: httpx.Client, shop: KnowledgeBase, rerank_worker: WorkerProcess
) -> None:
    question = "How can I delete my account?"
    _cached(api, question, "delete-account")
    entry = FaqEntry.objects.get(kb=shop, external_id="delete-account")
    _, writer = api_key_create(name="curator", kind=ApiKey.Kind.SECRET, kb=shop, scopes=["knowledge:write"])
    archived = api.delete(f"/api/v1/kbs/shop/entries/{entry.pk}", headers={"Authorization": f"Bearer {writer}"})
    assert archived.status_code == 200 and archived.json()["status"] == "archived", archived.text

    after = _ask(api, question)
    assert after["cache"] == "miss"
    assert "delete-account" not in _served_ids(after)


def test_archiving_in_bulk_in_the_admin_invalidates_their_cached_answers(
    api: httpx.Client, shop: KnowledgeBase, rerank_worker: WorkerProcess, admin_client: Client
) -> None:
    questions = {"退款多久能到账？": "refund", "The app keeps crashing when the camera opens": "camera-crash"}
    for question, external_id in questions.items():
        _cached(api, question, external_id)
    ids = list(FaqEntry.objects.filter(kb=shop, external_id__in=questions.values()).values_list("pk", flat=True))
    response = admin_client.post("/admin/knowledge/faqentry/", {"action": "archive", "_selected_action": ids})
    assert response.status_code == 302

    for question in questions:
        after = _ask(api, question)
        assert after["cache"] == "miss"
        assert not _served_ids(after) & set(questions.values()), after
