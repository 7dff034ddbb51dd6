"""Knowledge bases through HTTP: list, create, tune, statistics; and the OpenAPI schema."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from chat.models import AskLog
from knowledge.models import KnowledgeBase
from knowledge.services import faq_entries_embed, faq_entry_create, knowledge_base_create
from tests.knowledge.test_api_support import call, error_of, session


@pytest.fixture
def manager(kb: KnowledgeBase) -> Client:
    return session("maria", group="knowledge manager")


def _settings(kb: KnowledgeBase) -> tuple[object, ...]:
    kb.refresh_from_db()
    return (kb.name, kb.target_precision, kb.suggest_threshold, kb.recall_k, kb.rerank_k, kb.top_n,
            kb.content_generation)


def test_create_get_and_list(manager: Client, kb: KnowledgeBase) -> None:
    response = call(manager, "POST", "/api/v1/kbs", {"slug": "globex", "name": "Globex", "languages": ["en", "en"]})
    assert response.status_code == 201, response.content
    body = response.json()
    # Uncalibrated: no answer threshold until kb_calibrate certifies one.
    assert (body["slug"], body["name"], body["languages"], body["answer_threshold"],
            body["answer_thresholds_by_language"], body["target_precision"]) == (
        "globex", "Globex", ["en"], None, {}, 0.9)
    assert body["embed_model"] == kb.embed_model and body["embed_dimensions"] == kb.embed_dimensions
    assert call(manager, "GET", "/api/v1/kbs/globex").json() == body
    listed = call(manager, "GET", "/api/v1/kbs").json()
    assert (listed["count"], [item["slug"] for item in listed["results"]]) == (2, ["acme", "globex"])


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"slug": "acme"}, "slug"),
        ({"slug": "not a slug!"}, "slug"),
        ({"name": "no slug"}, "slug"),
        ({"slug": "x" * 65}, "slug"),
        ({"slug": "globex", "languages": ["fr"]}, "languages"),
        ({"slug": "globex", "languages": "en"}, "languages"),
        ({"slug": "globex", "name": 7}, "name"),
        ({"slug": "globex", "name": "bell\x07"}, "name"),
        ({"slug": "globex", "embed_model": "some/huge-model"}, "embed_model"),
    ],
)
def test_bad_knowledge_bases_are_refused(manager: Client, kb: KnowledgeBase, body: dict[str, object],
                                         field: str) -> None:
    response = call(manager, "POST", "/api/v1/kbs", body)
    assert response.status_code == 400
    assert field in error_of(response)["details"]["fields"]
    assert list(KnowledgeBase.objects.values_list("slug", flat=True)) == ["acme"]


def test_patch_tunes_and_invalidates_cached_answers(manager: Client, kb: KnowledgeBase) -> None:
    generation = kb.content_generation
    renamed = call(manager, "PATCH", "/api/v1/kbs/acme", {"name": "ACME", "description": "Shop"})
    assert renamed.status_code == 200
    assert (renamed.json()["name"], renamed.json()["content_generation"]) == ("ACME", generation)

    tuned = call(manager, "PATCH", "/api/v1/kbs/acme", {"target_precision": 0.95, "suggest_threshold": 0.8,
                                                        "recall_k": 100, "rerank_k": 30, "top_n": 5})
    assert tuned.status_code == 200, tuned.content
    assert _settings(kb) == ("ACME", 0.95, 0.8, 100, 30, 5, generation + 1)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"answer_threshold": 0.1}, "answer_threshold"),  # set by kb_calibrate only: read-only
        ({"target_precision": 1.5}, "target_precision"),
        ({"target_precision": 0}, "target_precision"),
        ({"target_precision": "high"}, "target_precision"),
        ({"target_confidence": 1}, "target_confidence"),
        ({"suggest_threshold": 1.5}, "suggest_threshold"),
        ({"suggest_threshold": -0.1}, "suggest_threshold"),
        ({"suggest_threshold": True}, "suggest_threshold"),
        ({"suggest_threshold": "0.9"}, "suggest_threshold"),
        ({"recall_k": 0}, "recall_k"),
        ({"recall_k": 10_000}, "recall_k"),
        ({"rerank_k": 60}, "rerank_k"),  # above recall_k (50)
        ({"top_n": 21}, "top_n"),
        ({"top_n": 4.5}, "top_n"),
        ({"top_n": 3, "rerank_k": 2}, "top_n"),
        ({"name": ""}, "name"),
        ({"rerank_instruction": "x" * 2001}, "rerank_instruction"),
        ({"slug": "renamed"}, "slug"),
        ({"embed_model": "other"}, "embed_model"),
    ],
)
def test_bad_settings_are_refused_and_nothing_changes(manager: Client, kb: KnowledgeBase, body: dict[str, object],
                                                      field: str) -> None:
    before = _settings(kb)
    response = call(manager, "PATCH", "/api/v1/kbs/acme", body)
    assert response.status_code == 400
    assert field in error_of(response)["details"]["fields"]
    assert _settings(kb) == before


def test_unknown_knowledge_base_is_404(manager: Client, kb: KnowledgeBase) -> None:
    for method, url in [("GET", "/api/v1/kbs/nope"), ("PATCH", "/api/v1/kbs/nope"), ("GET", "/api/v1/kbs/nope/stats")]:
        response = call(manager, method, url, {"top_n": 2} if method == "PATCH" else None)
        assert response.status_code == 404
        assert error_of(response)["code"] == "not_found"


def test_stats_count_entries_embeddings_and_asks(manager: Client, kb: KnowledgeBase) -> None:
    english = faq_entry_create(kb=kb, data={"question": "Refund?", "language": "en"})
    faq_entry_create(kb=kb, data={"question": "退款？", "language": "zh", "status": "draft"})
    faq_entry_create(kb=kb, data={"question": "No language", "status": "archived"})
    faq_entries_embed(entry_ids=[english.pk])
    for decision in ("answer", "answer", "handoff", "suggest"):
        AskLog.objects.create(kb=kb, text="q", normalized="q", decision=decision, cache="miss")
    old = AskLog.objects.create(kb=kb, text="q", normalized="q", decision="answer", cache="miss")
    AskLog.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=8))
    AskLog.objects.create(kb=knowledge_base_create(slug="globex"), text="q", normalized="q", decision="answer",
                          cache="hit")

    response = call(manager, "GET", "/api/v1/kbs/acme/stats")

    assert response.status_code == 200
    body = response.json()
    assert body["entries"] == {"total": 3, "by_status": {"draft": 1, "published": 1, "archived": 1},
                               "by_language": {"": 1, "en": 1, "zh": 1}}
    assert body["embedding"] == {"model": kb.embed_model, "entries": 3, "embedded": 1, "complete": False}
    assert body["pending_embedding"] is None
    assert body["asks"] == {"days": 7, "total": 4, "by_decision": {"answer": 2, "suggest": 1, "handoff": 1}}
    assert body["content_generation"] == KnowledgeBase.objects.get(pk=kb.pk).content_generation


def test_schema_documents_the_knowledge_api(client: Client) -> None:
    response = client.get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    schema = response.json()
    paths = schema["paths"]
    for path in ("/api/v1/kbs", "/api/v1/kbs/{slug}", "/api/v1/kbs/{slug}/stats", "/api/v1/kbs/{slug}/entries",
                 "/api/v1/kbs/{slug}/entries/{entry_id}", "/api/v1/kbs/{slug}/entries/{entry_id}/revisions",
                 "/api/v1/kbs/{slug}/entries/{entry_id}/rollback"):
        assert path in paths, path
    assert paths["/api/v1/kbs/{slug}/entries/{entry_id}"]["patch"]["operationId"] == "kbs_entries_update"
    assert "version" in schema["components"]["schemas"]["FaqEntryUpdateInput"]["required"]
    filters = {p["name"] for p in paths["/api/v1/kbs/{slug}/entries"]["get"]["parameters"]}
    assert {"status", "language", "category", "tag", "q", "ordering", "limit", "offset"} <= filters
