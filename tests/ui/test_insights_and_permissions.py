"""A knowledge manager turns an unanswered question into an FAQ entry; who may see and edit what."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect

from chat.models import Question
from knowledge.models import FaqEmbedding, FaqEntry, KnowledgeBase
from tests.conftest import WorkerProcess
from tests.helpers import wait_until

pytestmark = pytest.mark.worker

UNANSWERED = "你们的实体店周末营业吗？"


def _ask(live_server: Any, key: str, question: str) -> dict[str, Any]:
    """An ask as the widget makes it: publishable key, from the demo page's origin."""
    response = httpx.post(f"{live_server.url}/api/v1/ask", json={"kb": "demo", "question": question},
                          headers={"Authorization": f"Bearer {key}", "Origin": live_server.url}, timeout=90)
    assert response.status_code == 200, response.text
    return response.json()


def test_knowledge_manager_turns_an_unanswered_question_into_an_faq_entry(
    live_server: Any, widget_key: str, demo_kb: KnowledgeBase, cpu_worker: WorkerProcess,
    new_page: Callable[..., Page], shot: Callable[..., Path], staff_user: Callable[..., Any],
) -> None:
    """GIVEN customers asked something the demo knowledge base does not cover (and said so)
    WHEN a knowledge manager creates an FAQ entry from the unanswered queue
    THEN the next ask of that question returns the new entry."""
    first = _ask(live_server, widget_key, UNANSWERED)
    feedback = httpx.post(f"{live_server.url}/api/v1/feedback", timeout=30,
                          json={"ticket": first["ticket"], "question_id": first["question_id"], "helpful": False},
                          headers={"Authorization": f"Bearer {widget_key}", "Origin": live_server.url})
    assert feedback.status_code == 201
    _ask(live_server, widget_key, "退款多久能到账？")

    manager = staff_user("knowledge manager", username="kim")
    manager.set_password("correct horse battery staple")
    manager.save()
    page = new_page()
    page.goto(f"{live_server.url}/console/insights/")
    expect(page).to_have_url(f"{live_server.url}/console/login/?next=/console/insights/")
    page.get_by_label("Username").fill("kim")
    page.get_by_label("Password").fill("correct horse battery staple")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Knowledge insights")).to_be_visible()
    expect(page.locator("#kpi-total")).to_have_text("2")
    for chart in ("chart-asks", "chart-mix", "chart-rates", "chart-latency"):
        assert page.evaluate(f"!!Chart.getChart(document.getElementById('{chart}'))"), chart
    shot(page, "20-insights-dashboard", full_page=True)

    page.get_by_role("link", name="Unanswered & low confidence").click()
    row = page.locator("#queue tbody tr", has_text=UNANSWERED)
    expect(row).to_be_visible()
    shot(page, "21-insights-queue")

    row.get_by_role("link", name="Create FAQ entry from this").click()
    expect(page.get_by_label("Question:")).to_have_value(UNANSWERED)
    expect(page.locator("#id_kb option:checked")).to_have_text("demo")
    answer = "我们的实体店周末正常营业，营业时间为每天10:00到22:00，节假日营业时间以门店公告为准。"
    page.get_by_label("Answer:").fill(answer)
    page.get_by_label("Summary:").fill("门店营业时间：周末和节假日是否营业")
    shot(page, "22-admin-add-faq-prefilled")
    page.get_by_role("button", name="Save", exact=True).click()
    expect(page.locator(".messagelist")).to_contain_text("was added successfully")

    entry = FaqEntry.objects.get(kb=demo_kb, question=UNANSWERED)
    assert (entry.answer, entry.created_by) == (answer, manager)
    # The entry is embedded by the CPU worker after the save commits.
    wait_until(lambda: FaqEmbedding.objects.filter(entry=entry).exists(), timeout=60)

    again = _ask(live_server, widget_key, UNANSWERED)
    assert again["cache"] == "miss"  # the edit bumped the knowledge base's generation
    assert again["answer"]["id"] == entry.pk
    assert Question.objects.filter(text=UNANSWERED).count() == 2
    page.goto(f"{live_server.url}/console/insights/entries/?kb=demo")
    expect(page.locator("#entries-used")).to_contain_text(UNANSWERED)
    shot(page, "23-insights-entries")


def test_anonymous_visitors_see_only_the_widget_and_agents_cannot_edit_entries(
    live_server: Any, widget_key: str, demo_kb: KnowledgeBase, new_page: Callable[..., Page],
    shot: Callable[..., Path], staff_user: Callable[..., Any],
) -> None:
    anonymous = new_page()
    for path in ("/console/", "/console/workbench/", "/console/insights/"):
        anonymous.goto(f"{live_server.url}{path}")
        expect(anonymous).to_have_url(f"{live_server.url}/console/login/?next={path}")
    expect(anonymous.get_by_role("heading", name="Staff sign-in")).to_be_visible()
    shot(anonymous, "30-console-login")
    anonymous.goto(f"{live_server.url}/demo/?lang=en")
    expect(anonymous.get_by_role("button", name="Questions? Ask us")).to_be_visible()

    entry = FaqEntry.objects.filter(kb=demo_kb).order_by("pk").first()
    assert entry is not None
    change = f"{live_server.url}/admin/knowledge/faqentry/{entry.pk}/change/"

    agent = new_page(user=staff_user("agent"), base_url=live_server.url)
    agent.goto(f"{live_server.url}/console/insights/")
    expect(agent.get_by_role("heading", name="Not allowed")).to_be_visible()
    shot(agent, "31-agent-forbidden-insights")
    agent.goto(change)
    expect(agent.get_by_role("heading", name="View FAQ entry")).to_be_visible()
    expect(agent.get_by_role("button", name="Save", exact=True)).to_have_count(0)
    shot(agent, "32-agent-admin-read-only")

    manager = new_page(user=staff_user("knowledge manager"), base_url=live_server.url)
    manager.goto(change)
    expect(manager.get_by_role("heading", name="Change FAQ entry")).to_be_visible()
    manager.get_by_label("Answer:").fill(entry.answer + " 如有疑问请联系客服。")
    manager.get_by_role("button", name="Save", exact=True).click()
    expect(manager.locator(".messagelist")).to_contain_text("was changed successfully")
    entry.refresh_from_db()
    assert entry.answer.endswith("如有疑问请联系客服。") and entry.version == 2
