"""Who sees which page: anonymous visitors only the widget, agents no insights and no FAQ edits."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client

from knowledge.models import FaqEntry
from knowledge.services import faq_entry_create, knowledge_base_create

# Any ticket id (none exists); fixed, so that every test process collects the same tests.
CONSOLE_PAGES = ["/console/", "/console/workbench/", "/console/insights/", "/console/insights/queue/",
                 "/console/insights/entries/", "/console/tickets/7de79543-7023-4925-a0b9-9907e1cafcf2/"]


@pytest.mark.django_db
@pytest.mark.parametrize("path", CONSOLE_PAGES)
def test_anonymous_visitors_are_sent_to_the_login(client: Client, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 302
    assert response["Location"].startswith("/console/login/?next=")


@pytest.mark.django_db
def test_anonymous_visitors_get_the_demo_page_and_the_widget(client: Client) -> None:
    assert client.get("/demo/").status_code == 200
    script = client.get("/widget.js")
    assert script.status_code == 200
    assert script["Content-Type"].startswith("text/javascript")
    assert script["Cross-Origin-Resource-Policy"] == "cross-origin"
    assert b"attachShadow" in script.content
    assert client.get("/console/login/").status_code == 200


@pytest.mark.django_db
def test_console_pages_cannot_be_framed(client: Client, staff_user: Callable[..., Any]) -> None:
    client.force_login(staff_user("agent"))
    assert client.get("/console/")["X-Frame-Options"] == "DENY"
    assert client.get("/console/login/")["X-Frame-Options"] == "DENY"


@pytest.mark.django_db
def test_sign_in_through_the_form_lands_in_the_inbox(client: Client, staff_user: Callable[..., Any]) -> None:
    user = staff_user("agent")
    user.set_password("a long random passphrase")  # type: ignore[attr-defined]
    user.save()  # type: ignore[attr-defined]
    wrong = client.post("/console/login/", {"username": "agent", "password": "nope"})
    assert wrong.status_code == 200 and b"didn't match" in wrong.content
    right = client.post("/console/login/", {"username": "agent", "password": "a long random passphrase"})
    assert right.status_code == 302 and right["Location"] == "/console/"
    assert client.get("/console/").status_code == 200


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("role", "expected"),
    [
        ("agent", {"/console/": 200, "/console/workbench/": 200, "/console/insights/": 403,
                   "/console/insights/queue/": 403, "/console/insights/entries/": 403}),
        ("knowledge manager", {"/console/": 200, "/console/workbench/": 200, "/console/insights/": 200,
                               "/console/insights/queue/": 200, "/console/insights/entries/": 200}),
        ("admin", {"/console/": 200, "/console/workbench/": 200, "/console/insights/": 200}),
    ],
)
def test_roles_open_their_sections(client: Client, staff_user: Callable[..., Any], role: str,
                                   expected: dict[str, int]) -> None:
    knowledge_base_create(slug="acme")
    client.force_login(staff_user(role))
    assert {path: client.get(path).status_code for path in expected} == expected


@pytest.mark.django_db
def test_staff_without_a_role_see_a_403_page(client: Client) -> None:
    from django.contrib.auth.models import User

    client.force_login(User.objects.create_user("intern", is_staff=True))
    response = client.get("/console/")
    assert response.status_code == 403
    assert b"Not allowed" in response.content


def _entry() -> FaqEntry:
    kb = knowledge_base_create(slug="acme")
    return faq_entry_create(kb=kb, data={"question": "How do I reset my password?", "answer": "Use the link."})


def _change(client: Client, entry: FaqEntry, answer: str) -> int:
    data = {"kb": entry.kb_id, "question": entry.question, "answer": answer, "summary": "", "tags": "",
            "category": "", "language": "en", "status": "published", "version": entry.version,
            "external_id": ""}
    return client.post(f"/admin/knowledge/faqentry/{entry.pk}/change/", data).status_code


@pytest.mark.django_db
def test_an_agent_may_read_but_not_edit_faq_entries(client: Client, staff_user: Callable[..., Any]) -> None:
    entry = _entry()
    client.force_login(staff_user("agent"))
    page = client.get(f"/admin/knowledge/faqentry/{entry.pk}/change/")
    assert page.status_code == 200 and b'name="_save"' not in page.content  # the admin's read-only view
    assert _change(client, entry, "Changed by an agent") == 403
    assert client.get("/admin/knowledge/faqentry/add/").status_code == 403
    entry.refresh_from_db()
    assert entry.answer == "Use the link."


@pytest.mark.django_db
def test_a_knowledge_manager_edits_faq_entries(client: Client, staff_user: Callable[..., Any]) -> None:
    entry = _entry()
    client.force_login(staff_user("knowledge manager"))
    assert _change(client, entry, "Click Forgot password on the sign-in page.") == 302
    entry.refresh_from_db()
    assert entry.answer == "Click Forgot password on the sign-in page."
    assert entry.version == 2
