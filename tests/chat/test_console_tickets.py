"""The agent inbox and ticket page: filters, escaping, and every action recorded as agent feedback."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from chat.models import Feedback, Question, Ticket
from chat.services.ask import AskParams, ask
from chat.services.tickets import ticket_hand_off
from knowledge.models import KnowledgeBase
from knowledge.services import faq_entries_embed, faq_entry_create
from tests.chat.conftest import make_kb
from tests.conftest import WorkerProcess

pytestmark = pytest.mark.worker


def _ask(kb: KnowledgeBase, question: str, *, channel: str = "widget", customer: str = "") -> Question:
    body = ask(kb=kb, params=AskParams(question=question), channel=channel, customer=customer)
    return Question.objects.select_related("ticket").get(pk=body["question_id"])


@pytest.fixture
def agent_client(client: Client, staff_user: Callable[..., Any]) -> Client:
    client.force_login(staff_user("agent"))
    return client


def _rows(html: str) -> list[str]:
    return re.findall(r'<tr data-ticket="([0-9a-f-]+)">', html)


def test_inbox_puts_handed_off_first_and_filters(
    agent_client: Client, shop: KnowledgeBase, rerank_worker: WorkerProcess
) -> None:
    """GIVEN three customer tickets in two knowledge bases, one handed off, one old, and a workbench ticket
    WHEN the agent filters the inbox THEN each filter keeps exactly the matching tickets."""
    other = make_kb("other", [{"question": "Where is the shop?", "answer": "In Berlin."}])
    handed = _ask(shop, "退款多久到账").ticket
    ticket_hand_off(ticket=handed)
    recent = _ask(shop, "How can I delete my account?").ticket
    old = _ask(other, "Where is your shop located?").ticket
    Ticket.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=9),
                                            updated_at=timezone.now() - timedelta(days=9))
    _ask(shop, "How can I delete my account?", channel="workbench")

    def listed(query: str) -> list[str]:
        response = agent_client.get(f"/console/?{query}")
        assert response.status_code == 200
        return _rows(response.content.decode())

    ids = {t: str(t.public_id) for t in (handed, recent, old)}
    assert listed("") == [ids[handed], ids[recent], ids[old]]
    assert listed("status=handed_off") == [ids[handed]]
    assert listed("kb=other") == [ids[old]]
    assert listed("age=older") == [ids[old]]
    assert set(listed("age=24h")) == {ids[handed], ids[recent]}
    decision = Question.objects.get(ticket=recent).decision
    assert ids[recent] in listed(f"decision={decision}")
    assert listed("status=resolved") == []


def test_ticket_page_escapes_faq_text_and_marks_the_passage(
    agent_client: Client, shop: KnowledgeBase, rerank_worker: WorkerProcess
) -> None:
    entry = faq_entry_create(kb=shop, data={
        "question": "Why is my invoice <b>blank</b>?",
        "answer": "Invoices <script>alert('x')</script> need a billing address. Add your billing address "
                  "and the invoice fills in."})
    faq_entries_embed(entry_ids=[entry.pk])
    question = _ask(shop, "my invoice is blank <img src=x onerror=alert(1)>", customer="<i>Eve</i>")
    assert question.response["answer"]["id"] == entry.pk
    html = agent_client.get(f"/console/tickets/{question.ticket.public_id}/").content.decode()
    assert "<script>alert" not in html and "<img src=x" not in html and "<b>blank" not in html
    assert "<i>Eve" not in html and "&lt;i&gt;Eve&lt;/i&gt;" in html
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in html
    assert "<mark>" in html
    assert "Why is my invoice &lt;b&gt;blank&lt;/b&gt;?" in html


def test_agent_actions_are_recorded_as_agent_feedback(
    agent_client: Client, shop: KnowledgeBase, rerank_worker: WorkerProcess
) -> None:
    question = _ask(shop, "扫码支付提示交易异常")
    top = question.response["answer"]["id"]
    alternative = question.response["alternatives"][0]["id"]
    url = f"/console/tickets/{question.ticket.public_id}/questions/{question.pk}/act"

    def act(**data: object) -> None:
        response = agent_client.post(url, data)
        assert response.status_code == 303

    act(action="helpful")
    act(action="not_helpful")
    act(action="pick", entry=alternative)
    act(action="copy", entry=top)
    act(action="send", entry=top, reply="您好，这是支付网关返回码5003……")
    recorded = [(f.helpful, f.chosen_entry_id, f.comment, f.source, f.created_by.username)  # type: ignore[union-attr]
                for f in Feedback.objects.order_by("pk")]
    assert recorded == [
        (True, None, "", "agent", "agent"),
        (False, None, "", "agent", "agent"),
        (False, alternative, "Picked a better alternative", "agent", "agent"),
        (None, top, "Copied the answer", "agent", "agent"),
        (True, top, "您好，这是支付网关返回码5003……", "agent", "agent"),
    ]
    ticket = Ticket.objects.get(pk=question.ticket_id)
    assert ticket.assigned_to.username == "agent"  # type: ignore[union-attr]

    # Sending an alternative says the top answer was not the one.
    act(action="send", entry=alternative, reply="Another answer")
    assert Feedback.objects.order_by("-pk").values_list("helpful", "chosen_entry_id").first() == (False, alternative)

    page = agent_client.get(f"/console/tickets/{question.ticket.public_id}/").content.decode()
    assert "您好，这是支付网关返回码5003" in page and "Picked a better alternative" in page


def test_invalid_actions_record_nothing_and_say_why(
    agent_client: Client, shop: KnowledgeBase, rerank_worker: WorkerProcess
) -> None:
    question = _ask(shop, "How can I delete my account?")
    url = f"/console/tickets/{question.ticket.public_id}/questions/{question.pk}/act"
    top = question.response["answer"]["id"]
    agent_client.post(url, {"action": "pick", "entry": top})  # the top answer is not an alternative
    agent_client.post(url, {"action": "send", "entry": top, "reply": "   "})
    agent_client.post(url, {"action": "send", "entry": 999999, "reply": "hi"})
    assert Feedback.objects.count() == 0
    ticket_url = f"/console/tickets/{question.ticket.public_id}/"
    assert "entry: send one of the entries shown for this question" in agent_client.get(ticket_url).content.decode()
    # The message is shown once.
    assert "send one of the entries" not in agent_client.get(ticket_url).content.decode()


def test_resolve_and_hand_off_from_the_ticket_page(
    agent_client: Client, shop: KnowledgeBase, rerank_worker: WorkerProcess
) -> None:
    question = _ask(shop, "How can I delete my account?")
    url = f"/console/tickets/{question.ticket.public_id}/act"
    assert agent_client.post(url, {"action": "hand_off"}).status_code == 303
    assert Ticket.objects.get(pk=question.ticket_id).status == "handed_off"
    agent_client.post(url, {"action": "resolve"})
    ticket = Ticket.objects.get(pk=question.ticket_id)
    assert (ticket.status, ticket.assigned_to.username) == ("resolved", "agent")  # type: ignore[union-attr]
    notes = list(Feedback.objects.order_by("pk").values_list("comment", "source"))
    assert notes == [("Handed the ticket off", "agent"), ("Resolved the ticket", "agent")]
    page = agent_client.get(f"/console/tickets/{question.ticket.public_id}/").content.decode()
    assert 'value="send"' not in page  # a resolved ticket offers no more replies


def test_htmx_action_returns_the_updated_question_panel(
    agent_client: Client, shop: KnowledgeBase, rerank_worker: WorkerProcess
) -> None:
    question = _ask(shop, "How can I delete my account?")
    url = f"/console/tickets/{question.ticket.public_id}/questions/{question.pk}/act"
    response = agent_client.post(url, {"action": "helpful"}, HTTP_HX_REQUEST="true", follow=True)
    assert response.status_code == 200
    assert f'id="question-{question.pk}"' in response.content.decode()
    assert Feedback.objects.get().helpful is True
