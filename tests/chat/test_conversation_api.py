"""A ticket's conversation over real HTTP: history, the widget's cursor poll, customer messages."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from pytest_django.fixtures import Settings

from chat.models import ApiKey, Message, Ticket
from chat.services.keys import api_key_create
from chat.services.messages import agent_message_send, ticket_assign
from knowledge.models import FaqEntry, KnowledgeBase
from tests.chat.conftest import make_kb
from tests.conftest import WorkerProcess

pytestmark = pytest.mark.worker
ORIGIN = "https://shop.example"


@pytest.fixture
def widget(live_server: Any, shop: KnowledgeBase) -> Iterator[httpx.Client]:
    _, raw = api_key_create(name="widget", kind=ApiKey.Kind.PUBLISHABLE, kb=shop, allowed_origins=[ORIGIN])
    with httpx.Client(base_url=str(live_server.url), headers={"Authorization": f"Bearer {raw}", "Origin": ORIGIN},
                      timeout=60) as client:
        yield client


def test_conversation_in_order_and_the_cursor_poll(
    widget: httpx.Client, shop: KnowledgeBase, rerank_worker: WorkerProcess, staff_user: Callable[..., Any],
) -> None:
    """GIVEN a widget ticket with an answer WHEN the customer hands off, an agent claims and replies with an
    entry, and the customer writes back THEN the ticket reads as one conversation in order, and a poll after
    the cursor returns only what is new."""
    asked = widget.post("/api/v1/ask", json={"kb": "shop", "question": "退款多久到账"}).json()
    ticket_id = asked["ticket"]
    assert widget.post(f"/api/v1/tickets/{ticket_id}/handoff").status_code == 200
    first = widget.get(f"/api/v1/tickets/{ticket_id}/messages", params={"after": 0}).json()
    assert [(m["kind"], m.get("event")) for m in first["messages"]] == [("event", "handed_off")]
    assert (first["status"], first["assigned"]) == ("handed_off", False)
    cursor = first["cursor"]
    assert widget.get(f"/api/v1/tickets/{ticket_id}/messages", params={"after": cursor}).json()["messages"] == []

    agent = staff_user("agent")
    ticket = Ticket.objects.get(public_id=ticket_id)
    ticket_assign(ticket=ticket, agent=agent, by=agent)
    refund = FaqEntry.objects.get(kb=shop, external_id="refund")
    agent_message_send(ticket=ticket, body=refund.answer, via="console", author=agent, entry=refund)
    new = widget.get(f"/api/v1/tickets/{ticket_id}/messages", params={"after": cursor}).json()
    assert [(m["kind"], m.get("text")) for m in new["messages"]] == [("event", "agent"), ("agent", refund.answer)]
    assert new["messages"][1]["entry"] == {"id": refund.pk, "external_id": "refund", "question": refund.question,
                                           "edited": False}
    assert new["assigned"] is True and new["cursor"] == new["messages"][-1]["seq"]

    written = widget.post(f"/api/v1/tickets/{ticket_id}/messages", json={"text": "  谢谢，我再等等  "})
    assert written.status_code == 201 and written.json()["text"] == "谢谢，我再等等"

    whole = widget.get(f"/api/v1/tickets/{ticket_id}").json()
    kinds = [(m["kind"], m.get("event") or m.get("text") or m.get("decision")) for m in whole["messages"]]
    assert kinds == [("question", "退款多久到账"), ("answer", asked["decision"]), ("event", "handed_off"),
                     ("event", "assigned"), ("agent", refund.answer), ("customer", "谢谢，我再等等")]
    assert whole["messages"][1]["answer"]["id"] == asked["answer"]["id"]
    assert whole["messages"][4] == new["messages"][1]  # the poll says what the whole conversation says
    assert whole["cursor"] == Message.objects.latest("pk").pk


def test_bad_messages_and_other_tickets_are_refused_and_nothing_is_written(
    widget: httpx.Client, shop: KnowledgeBase, rerank_worker: WorkerProcess, settings: Settings,
) -> None:
    ticket_id = widget.post("/api/v1/ask", json={"kb": "shop", "question": "退款多久到账"}).json()["ticket"]
    url = f"/api/v1/tickets/{ticket_id}/messages"
    settings.KB_MAX_QUESTION_CHARS = 20
    for body, field in (({"text": "   "}, "text"), ({"text": "x" * 21}, "text"), ({}, "text"),
                        ({"text": "bell\x07"}, "text")):
        refused = widget.post(url, json=body)
        assert refused.status_code == 400, body
        assert field in refused.json()["error"]["details"]["fields"], refused.json()
    for after in ("-1", "soon"):
        bad = widget.get(url, params={"after": after})
        assert bad.status_code == 400 and "after" in bad.json()["error"]["details"]["fields"]
    assert Message.objects.count() == 0

    # Another knowledge base's ticket does not exist for this key; listing tickets is not its scope.
    make_kb("other", [{"question": "Where is the shop?", "answer": "In Berlin."}])
    _, secret = api_key_create(name="server", kind=ApiKey.Kind.SECRET, kb=None, scopes=["ask"])
    foreign = httpx.post(f"{widget.base_url}/api/v1/ask", json={"kb": "other", "question": "Where is the shop?"},
                         headers={"Authorization": f"Bearer {secret}"}, timeout=60).json()["ticket"]
    for path in (f"/api/v1/tickets/{foreign}", f"/api/v1/tickets/{foreign}/messages"):
        assert widget.get(path).status_code == 404
    assert widget.post(f"/api/v1/tickets/{foreign}/messages", json={"text": "hi"}).status_code == 404
    assert widget.get("/api/v1/tickets").status_code == 403

    Ticket.objects.filter(public_id=ticket_id).update(status=Ticket.Status.RESOLVED)
    closed = widget.post(url, json={"text": "still there?"})
    assert closed.status_code == 400 and "ticket" in closed.json()["error"]["details"]["fields"]
    assert Message.objects.count() == 0


def test_polls_have_their_own_budget_per_ticket(
    widget: httpx.Client, shop: KnowledgeBase, rerank_worker: WorkerProcess, settings: Settings,
) -> None:
    """GIVEN one site's key shared by many widgets WHEN their polls exceed the key's ask budget THEN asks are
    still served, and only a ticket polling faster than KB_POLL_THROTTLE_RATE is told to slow down."""
    settings.KB_WIDGET_THROTTLE_RATE = "3/min"
    settings.KB_POLL_THROTTLE_RATE = "4/min"
    tickets = [widget.post("/api/v1/ask", json={"kb": "shop", "question": q}).json()["ticket"]
               for q in ("退款多久到账", "如何修改收货地址")]
    for ticket_id in tickets:
        assert [widget.get(f"/api/v1/tickets/{ticket_id}/messages").status_code for _ in range(4)] == [200] * 4
    assert widget.get(f"/api/v1/tickets/{tickets[0]}/messages").status_code == 429
    assert widget.post("/api/v1/ask", json={"kb": "shop", "question": "I forgot my password"}).status_code == 200
