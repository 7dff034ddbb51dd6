"""Where regression cases come from: the console (one click after picking or sending an entry) and the
unanswered queue's "Create FAQ entry from this"."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from django.test import Client

from chat.models import Question
from chat.services.ask import AskParams, ask
from chat.services.tickets import ticket_hand_off
from knowledge.models import CaseSource, FaqEntry, KnowledgeBase, RegressionCase
from tests.conftest import WorkerProcess

pytestmark = pytest.mark.worker


def _ask(kb: KnowledgeBase, question: str) -> Question:
    body = ask(kb=kb, params=AskParams(question=question), channel="widget")
    return Question.objects.select_related("ticket").get(pk=body["question_id"])


def test_an_agent_keeps_a_picked_alternative_and_a_sent_entry_as_checks(
    client: Client, staff_user: Callable[..., Any], shop: KnowledgeBase, rerank_worker: WorkerProcess
) -> None:
    client.force_login(staff_user("agent"))
    question = _ask(shop, "扫码支付提示交易异常")
    alternative = question.response["alternatives"][0]["id"]
    url = f"/console/tickets/{question.ticket.public_id}/questions/{question.pk}/act"
    page = f"/console/tickets/{question.ticket.public_id}/"

    assert "Keep this as a check" not in client.get(page).content.decode()
    # Not an entry the agent picked or sent: refused, nothing kept.
    client.post(url, {"action": "keep_case", "entry": alternative})
    assert "keep an entry you picked or sent" in client.get(page).content.decode()
    assert not RegressionCase.objects.exists()

    client.post(url, {"action": "not_helpful"})
    client.post(url, {"action": "pick", "entry": alternative})
    assert "Keep this as a check" in client.get(page).content.decode()
    client.post(url, {"action": "keep_case", "entry": alternative})
    client.post(url, {"action": "keep_case", "entry": alternative})  # a second click merges

    case = RegressionCase.objects.get()
    assert (case.question, case.expect, case.entry_id, case.source) == (
        "扫码支付提示交易异常", "answer", alternative, CaseSource.CONSOLE_FEEDBACK)
    assert case.created_by is not None and case.created_by.username == "agent" and case.occurrences == 2
    assert "kept as a check" in client.get(page).content.decode()

    # A handed-off ticket resolved by sending an entry.
    other = _ask(shop, "退款要等几天")
    ticket_hand_off(ticket=other.ticket)
    refund = FaqEntry.objects.get(kb=shop, external_id="refund")
    other_url = f"/console/tickets/{other.ticket.public_id}/questions/{other.pk}/act"
    client.post(other_url, {"action": "send", "entry": refund.pk, "reply": refund.answer})
    client.post(f"/console/tickets/{other.ticket.public_id}/act", {"action": "resolve"})
    client.post(other_url, {"action": "keep_case", "entry": refund.pk})
    kept = RegressionCase.objects.get(entry=refund)
    assert (kept.question, kept.source) == ("退款要等几天", CaseSource.CONSOLE_RESOLVED)


def test_create_faq_entry_from_the_unanswered_queue_keeps_the_question_as_its_case(
    admin_client: Client, shop: KnowledgeBase, rerank_worker: WorkerProcess
) -> None:
    _ask(shop, "发票怎么开")
    queue = admin_client.get("/console/insights/queue/?days=30").content.decode()
    link = next(part.split('"')[0] for part in queue.split('href="')[1:] if "case_question" in part.split('"')[0])
    initial = {key: values[0] for key, values in parse_qs(urlparse(link.replace("&amp;", "&")).query).items()}
    assert initial["case_question"] == "发票怎么开"

    saved = admin_client.post("/admin/knowledge/faqentry/add/", {
        "kb": shop.pk, "question": initial["question"], "answer": "在订单详情页申请电子发票。", "summary": "",
        "external_id": "", "tags": "", "category": "", "language": "zh", "status": "published",
        "case_question": initial["case_question"]})

    assert saved.status_code == 302, saved.content.decode()[:2000]
    created = FaqEntry.objects.get(kb=shop, question="发票怎么开")
    case = RegressionCase.objects.get()
    assert (case.question, case.expect, case.entry_id, case.source) == (
        "发票怎么开", "answer", created.pk, CaseSource.UNANSWERED_QUEUE)
