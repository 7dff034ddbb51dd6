"""Knowledge analytics: daily volume and mix, cache and degraded rates, latency percentiles, the
unanswered queue and per-entry usage, from ask logs, questions and feedback."""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlparse

import numpy as np
import pytest
from django.test import Client
from django.utils import timezone

from chat import selectors
from chat.answer_cache import normalize_question
from chat.models import AskLog, Feedback, Question, Ticket
from chat.services.messages import agent_message_send
from knowledge.models import FaqEntry, KnowledgeBase
from knowledge.services import faq_entry_create, knowledge_base_create

pytestmark = pytest.mark.django_db


def _midnight(days_ago: int) -> datetime:
    return timezone.localtime().replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=days_ago)


def record(kb: KnowledgeBase, text: str, *, decision: str = "answer", cache: str = "miss", degraded: bool = False,
           total: float = 100.0, top: FaqEntry | None = None, when: datetime | None = None, source: str = "widget",
           helpful: bool | None = None, chosen: FaqEntry | None = None) -> Question:
    """One ask as the pipeline records it: ticket, answered question, ask log (and optional feedback)."""
    ticket = Ticket.objects.create(kb=kb, channel=source)
    question = Question.objects.create(
        ticket=ticket, text=text, normalized=normalize_question(text), state="answered", decision=decision,
        response={"answer": {"id": top.pk} if top else None, "alternatives": []})
    log = AskLog.objects.create(kb=kb, question=question, text=text, normalized=question.normalized, decision=decision,
                                top_entry=top, top_score=0.5, cache=cache, degraded=degraded,
                                timings_ms={"total": total}, source=source)
    if when is not None:
        Question.objects.filter(pk=question.pk).update(created_at=when)
        AskLog.objects.filter(pk=log.pk).update(created_at=when)
    if helpful is not None or chosen is not None:
        Feedback.objects.create(question=question, helpful=helpful, chosen_entry=chosen)
    return question


@pytest.fixture
def kb() -> KnowledgeBase:
    return knowledge_base_create(slug="shop")


def test_daily_volume_mix_rates_and_latency(kb: KnowledgeBase) -> None:
    two_days_ago = _midnight(2) + timedelta(hours=10)
    record(kb, "a", when=two_days_ago, cache="hit", total=5)
    record(kb, "b", when=two_days_ago, total=50)
    today = [("answer", "miss", False, 100.0), ("suggest", "miss", True, 300.0), ("handoff", "hit", False, 20.0),
             ("answer", "hit", False, 10.0)]
    for decision, cache, degraded, total in today:
        record(kb, f"q {total}", decision=decision, cache=cache, degraded=degraded, total=total)
    record(kb, "a staff experiment", total=5000, source="workbench")  # left out everywhere

    days = selectors.asks_daily(kb=kb, since=_midnight(2))
    assert [row["day"] for row in days] == [_midnight(n).date() for n in (2, 1, 0)]
    assert [row["total"] for row in days] == [2, 0, 4]
    latest = days[-1]
    assert (latest["answer"], latest["suggest"], latest["handoff"]) == (2, 1, 1)
    assert (latest["hit_rate"], latest["degraded_rate"]) == (0.5, 0.25)
    totals = [total for *_, total in today]
    # Postgres percentile_cont interpolates linearly, like numpy's default.
    assert latest["p50"] == pytest.approx(np.percentile(totals, 50))
    assert latest["p95"] == pytest.approx(np.percentile(totals, 95))
    assert days[1]["hit_rate"] is None and days[1]["p50"] is None

    summary = selectors.asks_summary(kb=kb, since=_midnight(2))
    assert (summary["total"], summary["cache_hits"], summary["degraded_count"]) == (6, 3, 1)
    assert selectors.asks_summary(kb=kb, since=_midnight(0))["total"] == 4
    other = knowledge_base_create(slug="other")
    assert selectors.asks_summary(kb=other, since=_midnight(2))["total"] == 0
    assert selectors.asks_summary(kb=None, since=_midnight(2))["total"] == 6


def test_top_questions_count_normalised_wording(kb: KnowledgeBase) -> None:
    for text in ("退款多久到账？", "退款多久到账", " 退款多久到账 ", "How do I delete my account?"):
        record(kb, text)
    top = selectors.top_questions(kb=kb, since=_midnight(1))
    assert [(row["normalized"], row["count"], row["answered"]) for row in top] == [
        ("退款多久到账", 3, 3), ("how do i delete my account", 1, 1)]


def test_unanswered_queue_groups_similar_wording_and_drops_what_got_answered(kb: KnowledgeBase) -> None:
    earlier = timezone.now() - timedelta(hours=2)
    record(kb, "退款多久到账", decision="handoff", when=earlier)
    record(kb, "退款多久到账", decision="suggest", when=earlier)
    record(kb, "退款什么时候到账啊", decision="suggest", when=earlier)
    record(kb, "How do I delete my account?", decision="answer", helpful=False, when=earlier)
    record(kb, "你们几点下班", decision="handoff", when=earlier)
    record(kb, "发票怎么开", decision="answer", helpful=True, when=earlier)  # answered well: not in the queue
    record(kb, "退款多久到账", decision="handoff", source="workbench")  # experiments stay out

    groups = selectors.unanswered_queue(kb=kb, since=_midnight(1))
    summary = {group.text: (group.count, group.not_helpful, dict(group.decisions)) for group in groups}
    assert summary == {
        "退款多久到账": (3, 0, {"handoff": 1, "suggest": 2}),  # with "退款什么时候到账啊", by meaning
        "How do I delete my account?": (1, 1, {"answer": 1}),
        "你们几点下班": (1, 0, {"handoff": 1}),
    }
    assert groups[0].text == "退款多久到账"
    exact = selectors.unanswered_queue(kb=kb, since=_midnight(1), merge_similar=False)
    assert {group.text for group in exact} == set(summary) | {"退款什么时候到账啊"}

    # Someone added an FAQ entry: the same wording is now answered, so it leaves the queue.
    record(kb, "你们几点下班？", decision="answer")
    assert "你们几点下班" not in {group.text for group in selectors.unanswered_queue(kb=kb, since=_midnight(1))}
    shown = selectors.unanswered_queue(kb=kb, since=_midnight(1), include_answered=True)
    assert [group.answered_since for group in shown if group.text == "你们几点下班"] == [True]


def test_entry_usage_counts_answers_ratings_picks_and_the_unused(kb: KnowledgeBase) -> None:
    refund, address, unused = (faq_entry_create(kb=kb, data={"question": q, "answer": "…"})
                               for q in ("退款多久到账", "怎么改地址", "积分会过期吗"))
    record(kb, "退款多久", top=refund, helpful=True)
    record(kb, "退款几天到", top=refund, helpful=False, chosen=address)
    record(kb, "退款", top=refund, decision="suggest")
    record(kb, "退款", top=refund, source="workbench")  # not counted
    usage = {row.entry.pk: row for row in selectors.entry_usage(kb=kb, since=_midnight(1))}
    row = usage[refund.pk]
    assert (row.top, row.answered, row.helpful, row.not_helpful, row.helpful_rate) == (3, 2, 1, 1, 0.5)
    assert (usage[address.pk].top, usage[address.pk].chosen, usage[address.pk].used) == (0, 1, True)
    assert not usage[unused.pk].used and usage[unused.pk].helpful_rate is None


def test_entries_agents_send_count_as_use_apart_from_customer_ratings(
    kb: KnowledgeBase, staff_user: Callable[..., Any],
) -> None:
    """GIVEN a question answered with one entry WHEN an agent sends another entry (edited), sends a free-text
    reply and rates the answer THEN the sent entry counts as sent by agents, the free text counts for no entry,
    and the helpful rate stays the customers' (the agent's verdict is not one of them)."""
    refund, address = (faq_entry_create(kb=kb, data={"question": q, "answer": "…"})
                       for q in ("退款多久到账", "怎么改地址"))
    question = record(kb, "退款多久", top=refund, helpful=True)
    agent = staff_user("agent")
    agent_message_send(ticket=question.ticket, body="先改地址：在订单详情页点“修改地址”。", via="console", author=agent,
                       entry=address)
    agent_message_send(ticket=question.ticket, body="我帮您查一下。", via="console", author=agent)
    Feedback.objects.create(question=question, helpful=False, source=Feedback.Source.AGENT, created_by=agent)
    usage = {row.entry.pk: row for row in selectors.entry_usage(kb=kb, since=_midnight(1))}
    assert (usage[address.pk].sent, usage[address.pk].used, usage[address.pk].rated) == (1, True, 0)
    assert (usage[refund.pk].sent, usage[refund.pk].helpful, usage[refund.pk].not_helpful) == (0, 1, 0)


@pytest.fixture
def manager(client: Client, staff_user: Callable[..., Any]) -> Client:
    client.force_login(staff_user("knowledge manager"))
    return client


def test_dashboard_shows_numbers_and_chart_data(manager: Client, kb: KnowledgeBase) -> None:
    record(kb, "退款多久到账", decision="handoff", total=120)
    record(kb, "How do I delete my account?", total=80, cache="hit")
    page = manager.get("/console/insights/?kb=shop&days=7").content.decode()
    assert '<div class="value" id="kpi-total">2</div>' in page
    assert 'id="insights-data"' in page and 'data-chart="asks-daily"' in page and 'data-chart="latency"' in page
    assert "50.0%" in page  # answered and cache hit rate
    assert "退款多久到账" in page  # top questions


def test_queue_links_to_a_prefilled_admin_form(manager: Client, kb: KnowledgeBase) -> None:
    record(kb, "你们几点下班？<script>", decision="handoff")
    page = manager.get("/console/insights/queue/").content.decode()
    assert "<script>" not in page
    link = html.unescape(re.search(r'href="(/admin/knowledge/faqentry/add/\?[^"]+)"', page).group(1))  # type: ignore[union-attr]
    query = parse_qs(urlparse(link).query)
    assert query == {"question": ["你们几点下班？<script>"], "kb": [str(kb.pk)], "language": ["zh"],
                     "case_question": ["你们几点下班？<script>"]}  # kept as the new entry's regression case
    form = manager.get(link).content.decode()
    assert "你们几点下班？&lt;script&gt;</textarea>" in form
    assert f'<option value="{kb.pk}" selected>' in form


def test_agents_see_no_create_link(client: Client, staff_user: Callable[..., Any], kb: KnowledgeBase) -> None:
    record(kb, "你们几点下班", decision="handoff")
    admin = staff_user("admin")
    client.force_login(admin)
    assert "Create FAQ entry from this" in client.get("/console/insights/queue/").content.decode()
    client.force_login(staff_user("agent"))
    assert client.get("/console/insights/queue/").status_code == 403


def test_entries_page_lists_used_and_unused(manager: Client, kb: KnowledgeBase) -> None:
    used = faq_entry_create(kb=kb, data={"question": "退款多久到账", "answer": "3-5天"})
    faq_entry_create(kb=kb, data={"question": "积分会过期吗", "answer": "不会"})
    record(kb, "退款多久", top=used, helpful=True)
    page = manager.get("/console/insights/entries/?kb=shop").content.decode()
    used_table, unused_list = page.split('id="entries-unused"') if 'id="entries-unused"' in page else (page, "")
    assert "退款多久到账" in used_table and "100.0%" in used_table
    assert "积分会过期吗" in unused_list
