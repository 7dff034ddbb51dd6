"""Who may use the knowledge API: the authorisation matrix, through HTTP."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.test import Client
from django.utils import timezone

from chat.models import ApiKey, Scope
from knowledge.models import FaqEntry, KnowledgeBase
from knowledge.services import faq_entry_create, knowledge_base_create
from tests.knowledge.test_api_support import call, error_of, publishable_key, secret_key, session

Persona = Callable[[KnowledgeBase], tuple[Client, dict[str, str]]]

PERSONAS: dict[str, Persona] = {
    "anonymous": lambda kb: (Client(), {}),
    "publishable key": lambda kb: (Client(), publishable_key(kb)),
    "secret key without the scope": lambda kb: (Client(), secret_key(kb, scopes=(Scope.ASK, Scope.ANALYTICS))),
    "secret key of this kb": lambda kb: (Client(), secret_key(kb)),
    "secret key of all kbs": lambda kb: (Client(), secret_key(None)),
    "secret key of another kb": lambda kb: (Client(), secret_key(knowledge_base_create(slug="globex"))),
    "agent session": lambda kb: (session("alice", group="agent"), {}),
    "knowledge manager session": lambda kb: (session("maria", group="knowledge manager"), {}),
    "knowledge manager, not staff": lambda kb: (session("nora", group="knowledge manager", staff=False), {}),
    "staff without a group": lambda kb: (session("sam"), {}),
    "superuser": lambda kb: (session("root", superuser=True), {}),
}
# status of a read and of a write, and the error code when refused
EXPECTED: dict[str, tuple[int, int, str | None]] = {
    "anonymous": (401, 401, "not_authenticated"),
    "publishable key": (403, 403, "permission_denied"),
    "secret key without the scope": (403, 403, "permission_denied"),
    "secret key of this kb": (200, 201, None),
    "secret key of all kbs": (200, 201, None),
    "secret key of another kb": (404, 404, "not_found"),
    "agent session": (403, 403, "permission_denied"),
    "knowledge manager session": (200, 201, None),
    "knowledge manager, not staff": (403, 403, "permission_denied"),
    "staff without a group": (403, 403, "permission_denied"),
    "superuser": (200, 201, None),
}


@pytest.mark.parametrize("persona", list(PERSONAS))
def test_authorisation_matrix(kb: KnowledgeBase, persona: str) -> None:
    entry = faq_entry_create(kb=kb, data={"question": "Opening hours?", "answer": "9 to 5."})
    client, headers = PERSONAS[persona](kb)
    read_status, write_status, code = EXPECTED[persona]
    base = f"/api/v1/kbs/{kb.slug}"

    reads = [call(client, "GET", url, headers=headers) for url in
             (base, f"{base}/stats", f"{base}/entries", f"{base}/entries/{entry.pk}",
              f"{base}/entries/{entry.pk}/revisions")]
    created = call(client, "POST", f"{base}/entries", {"question": "New?"}, headers=headers)
    patched = call(client, "PATCH", f"{base}/entries/{entry.pk}", {"version": 1, "answer": "changed"},
                   headers=headers)
    archived = call(client, "DELETE", f"{base}/entries/{entry.pk}", headers=headers)
    tuned = call(client, "PATCH", base, {"top_n": 2}, headers=headers)

    assert [r.status_code for r in reads] == [read_status] * 5
    assert created.status_code == write_status
    expect_ok = code is None
    assert [patched.status_code, archived.status_code, tuned.status_code] == [200 if expect_ok else write_status] * 3
    if expect_ok:
        assert FaqEntry.objects.filter(kb=kb).count() == 2
        entry.refresh_from_db()
        assert (entry.answer, entry.status, entry.version) == ("changed", "archived", 3)
        assert KnowledgeBase.objects.get(pk=kb.pk).top_n == 2
        return
    for response in [*reads, created, patched, archived, tuned]:
        assert error_of(response)["code"] == code
    assert FaqEntry.objects.count() == 1
    entry.refresh_from_db()
    assert (entry.answer, entry.status, entry.version) == ("9 to 5.", "published", 1)
    assert KnowledgeBase.objects.get(pk=kb.pk).top_n == 3


def test_anonymous_gets_401_with_a_challenge(kb: KnowledgeBase) -> None:
    response = Client().get("/api/v1/kbs")
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert error_of(response)["code"] == "not_authenticated"


def test_unknown_and_revoked_keys_are_401(kb: KnowledgeBase) -> None:
    headers = secret_key(kb)
    ApiKey.objects.update(revoked_at=timezone.now())
    for attempt in (headers, {"Authorization": "Bearer kb_sk_made-up"}):
        response = call(Client(), "POST", "/api/v1/kbs/acme/entries", {"question": "Sneaky?"}, headers=attempt)
        assert response.status_code == 401
        assert error_of(response)["code"] == "authentication_failed"
    assert FaqEntry.objects.count() == 0


def test_publishable_key_never_writes_even_with_the_scope(kb: KnowledgeBase) -> None:
    headers = publishable_key(kb)
    ApiKey.objects.update(scopes=[Scope.KNOWLEDGE_WRITE])  # as if someone edited it in the database
    response = call(Client(), "POST", "/api/v1/kbs/acme/entries", {"question": "From a web page?"}, headers=headers)
    assert response.status_code == 403
    assert error_of(response)["code"] == "permission_denied"
    assert FaqEntry.objects.count() == 0


def test_a_bound_key_sees_and_creates_only_its_kb(kb: KnowledgeBase) -> None:
    knowledge_base_create(slug="globex")
    headers = secret_key(kb)
    listed = call(Client(), "GET", "/api/v1/kbs", headers=headers).json()
    assert [item["slug"] for item in listed["results"]] == ["acme"]

    created = call(Client(), "POST", "/api/v1/kbs", {"slug": "initech"}, headers=headers)
    assert created.status_code == 403
    assert error_of(created)["code"] == "permission_denied"
    assert not KnowledgeBase.objects.filter(slug="initech").exists()


def test_a_key_for_all_kbs_lists_them_all(kb: KnowledgeBase) -> None:
    knowledge_base_create(slug="globex")
    listed = call(Client(), "GET", "/api/v1/kbs", headers=secret_key(None)).json()
    assert (listed["count"], [item["slug"] for item in listed["results"]]) == (2, ["acme", "globex"])
