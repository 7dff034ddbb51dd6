"""The agent inbox and ticket page: filters, escaping, and every action recorded as agent feedback."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from chat.models import Feedback, Message, Question, Ticket
from chat.services.ask import AskParams, ask
from chat.services.tickets import ticket_hand_off
from knowledge.models import FaqEntry, KnowledgeBase
from knowledge.services import faq_entries_embed, faq_entry_create
from tests.chat.conftest import make_kb
from tests.conftest import WorkerProcess
from tests.helpers import calibration_in_force

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
    calibration_in_force(other, answer=None, suggest=1.0)  # no score reaches it: this base hands off
    other = KnowledgeBase.objects.get(pk=other.pk)  # ask() reads the calibration from the object it is given
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
    decisions = {t: Question.objects.get(ticket=t).decision for t in (handed, recent, old)}
    assert decisions == {handed: "suggest", recent: "suggest", old: "handoff"}
    assert listed("decision=suggest") == [ids[handed], ids[recent]]
    assert listed("decision=handoff") == [ids[old]]
    assert listed("decision=answer") == []
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


def test_agent_verdicts_are_feedback_and_sent_entries_are_messages(
    agent_client: Client, shop: KnowledgeBase, rerank_worker: WorkerProcess
) -> None:
    """GIVEN an answered question WHEN the agent rates, picks, copies and sends entries THEN the verdicts
    are agent feedback, and each sent entry is an agent message naming the entry, not a rating."""
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
    ]
    ticket = Ticket.objects.get(pk=question.ticket_id)
    assert ticket.assigned_to.username == "agent"  # type: ignore[union-attr]

    entry = FaqEntry.objects.get(pk=alternative)
    act(action="send", entry=alternative, reply=entry.answer)  # sent as is
    sent = list(Message.objects.filter(kind="agent").order_by("pk").values_list("entry_id", "entry_edited", "body"))
    assert sent == [(top, True, "您好，这是支付网关返回码5003……"), (alternative, False, entry.answer)]
    assert Feedback.objects.count() == 4

    page = agent_client.get(f"/console/tickets/{question.ticket.public_id}/").content.decode()
    assert "您好，这是支付网关返回码5003" in page and "Picked a better alternative" in page
    assert "Sent FAQ entry" in page and "(edited)" in page


def test_reply_box_claim_assign_and_the_inbox_filters(
    agent_client: Client, shop: KnowledgeBase, rerank_worker: WorkerProcess, staff_user: Callable[..., Any],
) -> None:
    """GIVEN two customer tickets WHEN the agent claims one, replies, assigns the other to a colleague and
    back THEN the events are in the conversation, the reply is a message, and "mine"/"unassigned" filter."""
    colleague = staff_user("agent", username="colleague")
    first = _ask(shop, "How can I delete my account?").ticket
    second = _ask(shop, "退款多久到账").ticket
    act = f"/console/tickets/{first.public_id}/act"
    assert agent_client.post(act, {"action": "claim"}).status_code == 303
    reply = agent_client.post(f"/console/tickets/{first.public_id}/reply", {"reply": "  I'll look into it.  "})
    assert reply.status_code == 303 and reply["Location"].endswith("#reply")
    agent_client.post(f"/console/tickets/{second.public_id}/act", {"action": "assign", "agent": colleague.pk})

    def listed(query: str) -> list[str]:
        return _rows(agent_client.get(f"/console/?{query}").content.decode())

    assert listed("assignee=mine") == [str(first.public_id)]
    assert listed("assignee=unassigned") == []
    inbox = agent_client.get("/console/").content.decode()
    assert "colleague" in inbox and "I&#x27;ll look into it." in inbox  # Agent and Last message columns

    agent_client.post(f"/console/tickets/{second.public_id}/act", {"action": "unassign"})
    assert listed("assignee=unassigned") == [str(second.public_id)]
    events = list(Message.objects.filter(kind="event").order_by("pk").values_list("ticket_id", "event", "body"))
    assert events == [(first.pk, "assigned", "agent"), (second.pk, "assigned", "colleague"),
                      (second.pk, "unassigned", "")]
    assert list(Message.objects.filter(kind="agent").values_list("body", "entry_id")) == [("I'll look into it.", None)]
    assert Feedback.objects.count() == 0  # a free-text reply rates no entry

    # A refused reply keeps what was typed, says why, and records nothing.
    too_long = "x" * 4001
    agent_client.post(f"/console/tickets/{first.public_id}/reply", {"reply": too_long})
    page = agent_client.get(f"/console/tickets/{first.public_id}/").content.decode()
    assert too_long in page and "the limit is 4000" in page
    assert Message.objects.filter(kind="agent").count() == 1


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
    events = list(Message.objects.order_by("pk").values_list("event", "author__username"))
    assert events == [("handed_off", "agent"), ("resolved", "agent")]
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
