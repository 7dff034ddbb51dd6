"""CSRF on signed-in writes, over real HTTP with a client that, like a browser, does not skip the check:
a cross-site form post (no token) is refused with 403 and changes nothing; the same post with the
page's token goes through."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from chat.models import Ticket
from chat.services.tickets import ticket_create
from knowledge.models import FaqEntry, KnowledgeBase
from knowledge.services import faq_entry_create, knowledge_base_create

PASSWORD = "unused-in-tests"  # the staff_user factory's


@pytest.fixture
def kb(transactional_db: None) -> KnowledgeBase:
    return knowledge_base_create(slug="shop", name="Shop")


def _signed_in(base_url: str, username: str) -> httpx.Client:
    client = httpx.Client(base_url=base_url, timeout=60)
    page = client.get("/console/login/")
    response = client.post("/console/login/", data={"username": username, "password": PASSWORD,
                                                   "csrfmiddlewaretoken": _token(page.text)},
                           headers={"Referer": f"{base_url}/console/login/"})
    assert response.status_code == 302, response.text
    return client


def _token(html: str) -> str:
    found = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html)
    assert found, html[:500]
    return found.group(1)


@pytest.fixture
def signed_in(live_server: Any, staff_user: Callable[..., Any]) -> Iterator[Callable[[str], httpx.Client]]:
    clients: list[httpx.Client] = []

    def sign_in(role: str) -> httpx.Client:
        staff_user(role)
        clients.append(_signed_in(live_server.url, role.replace(" ", "-")))
        return clients[-1]

    yield sign_in
    for client in clients:
        client.close()


def test_a_console_action_needs_the_csrf_token(kb: KnowledgeBase, signed_in: Callable[[str], httpx.Client]) -> None:
    agent = signed_in("agent")
    ticket = ticket_create(kb=kb, customer="c-1", channel="widget")
    url = f"/console/tickets/{ticket.public_id}/act"
    referer = {"Referer": f"{agent.base_url}/console/tickets/{ticket.public_id}/"}

    forged = agent.post(url, data={"action": "claim"}, headers=referer)
    assert forged.status_code == 403
    assert Ticket.objects.get(pk=ticket.pk).assigned_to_id is None

    page = agent.get(f"/console/tickets/{ticket.public_id}/")
    accepted = agent.post(url, data={"action": "claim", "csrfmiddlewaretoken": _token(page.text)}, headers=referer)
    assert accepted.status_code == 303
    assert Ticket.objects.get(pk=ticket.pk).assigned_to is not None


def test_the_console_reply_needs_the_csrf_token(kb: KnowledgeBase, signed_in: Callable[[str], httpx.Client]) -> None:
    agent = signed_in("agent")
    ticket = ticket_create(kb=kb, customer="c-1", channel="widget")
    forged = agent.post(f"/console/tickets/{ticket.public_id}/reply", data={"reply": "Hello"})
    assert forged.status_code == 403
    assert not ticket.messages.exists()


def test_an_admin_action_needs_the_csrf_token(kb: KnowledgeBase, signed_in: Callable[[str], httpx.Client]) -> None:
    manager = signed_in("admin")
    entry = faq_entry_create(kb=kb, data={"question": "Refund time?", "answer": "Five days."})
    referer = {"Referer": f"{manager.base_url}/admin/knowledge/faqentry/"}
    forged = manager.post("/admin/knowledge/faqentry/", data={"action": "archive", "_selected_action": [entry.pk]},
                          headers=referer)
    assert forged.status_code == 403
    assert FaqEntry.objects.get(pk=entry.pk).status == "published"

    page = manager.get("/admin/knowledge/faqentry/")
    accepted = manager.post("/admin/knowledge/faqentry/", headers=referer, data={
        "action": "archive", "_selected_action": [entry.pk], "csrfmiddlewaretoken": _token(page.text)})
    assert accepted.status_code == 302
    assert FaqEntry.objects.get(pk=entry.pk).status == "archived"


def test_a_session_write_to_the_api_needs_the_csrf_header(
    kb: KnowledgeBase, signed_in: Callable[[str], httpx.Client]
) -> None:
    """The API takes the console's session too (DRF's SessionAuthentication): without the X-CSRFToken
    header a signed-in page on another site could edit entries."""
    manager = signed_in("admin")
    entry = faq_entry_create(kb=kb, data={"question": "Refund time?", "answer": "Five days."})
    url = f"/api/v1/kbs/shop/entries/{entry.pk}"
    body = {"version": entry.version, "answer": "Ten days."}
    forged = manager.patch(url, json=body)
    assert forged.status_code == 403 and forged.json()["error"]["code"], forged.text
    assert FaqEntry.objects.get(pk=entry.pk).answer == "Five days."

    accepted = manager.patch(url, json=body, headers={"X-CSRFToken": manager.cookies["csrftoken"],
                                                      "Referer": f"{manager.base_url}/admin/"})
    assert accepted.status_code == 200, accepted.text
    assert FaqEntry.objects.get(pk=entry.pk).answer == "Ten days."
