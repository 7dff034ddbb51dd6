"""A customer uses the widget on the demo page; an agent picks the ticket up in the console."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect
from pytest_django.fixtures import Settings

from chat.models import Feedback, Message, Question, Ticket
from knowledge.models import KnowledgeBase
from knowledge.services import faq_entries_embed, faq_entry_create
from tests.ui.conftest import wait_for_answers

pytestmark = pytest.mark.worker

Shot = Callable[..., Path]


def test_customer_asks_in_chinese_rates_and_asks_for_a_person_then_an_agent_answers(
    live_server: Any, widget_key: str, new_page: Callable[..., Page], shot: Shot,
    staff_user: Callable[..., Any],
) -> None:
    # --- the customer, in a Chinese browser ---------------------------------------------------------
    page = new_page(locale="zh-CN")
    page.goto(f"{live_server.url}/demo/")
    launcher = page.get_by_role("button", name="有问题？问我们")
    expect(launcher).to_be_visible()
    shot(page, "01-demo-page")
    launcher.click()
    box = page.get_by_role("textbox", name="您的问题")
    expect(box).to_be_focused()  # the panel opens on the question box: keyboard users can type at once
    box.fill("扫码支付的时候提示交易异常，请稍后再试，怎么办")
    box.press("Enter")
    mark = page.locator("#kb-chat-widget mark").first
    wait_for_answers(1)
    expect(mark).to_be_visible()
    question = Question.objects.select_related("ticket").get()
    answer = question.response["answer"]
    assert answer["external_id"] == "demo-zh-001"
    assert mark.text_content() in answer["answer"]
    expect(page.locator("#kb-chat-widget").get_by_text(answer["question"]).first).to_be_visible()
    shot(page, "02-widget-answer-zh")

    page.get_by_role("button", name="有帮助").click()
    expect(page.get_by_text("感谢您的反馈！")).to_be_visible()
    feedback = Feedback.objects.get()
    assert (feedback.helpful, feedback.source, feedback.question_id) == (True, "customer", question.pk)

    page.locator("#kb-chat-widget").get_by_role("button", name="转人工客服").first.click()
    expect(page.get_by_text("已为您转接人工客服", exact=False)).to_be_visible()
    ticket = Ticket.objects.get()
    assert (ticket.status, ticket.channel) == ("handed_off", "widget")
    shot(page, "03-widget-handed-off")

    # --- the agent ----------------------------------------------------------------------------------
    agent = new_page(user=staff_user("agent"), base_url=live_server.url)
    agent.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_server.url)
    agent.goto(f"{live_server.url}/console/")
    row = agent.locator(f'tr[data-ticket="{ticket.public_id}"]')
    expect(row).to_contain_text("Handed off")
    expect(row).to_contain_text("扫码支付的时候提示交易异常")
    shot(agent, "04-console-inbox")
    # Filters apply on change (htmx swaps the list and the status tabs, and updates the address); the
    # form itself stays in the page, so the select a user is on keeps its focus.
    age = agent.get_by_label("Age")
    form = agent.locator("form.filters").element_handle()
    age.select_option("older")
    expect(agent).to_have_url(f"{live_server.url}/console/?status=attention&kb=&decision=&age=older&assignee=")
    expect(agent.locator("#inbox-results")).to_contain_text("No tickets match these filters.")
    expect(agent.get_by_role("link", name="Handed off")).to_have_attribute("href", re.compile(r"age=older"))
    assert form.evaluate("form => form.isConnected")
    age.select_option("1h")
    expect(row).to_be_visible()
    expect(agent.get_by_role("link", name="Handed off")).to_have_attribute("href", re.compile(r"age=1h"))

    row.get_by_role("link").click()
    expect(agent.locator(".answer-card.top mark").first).to_be_visible()
    expect(agent.get_by_role("heading", name="Suggested answer")).to_be_visible()
    shot(agent, "05-console-ticket")

    top = agent.locator(".answer-card.top")
    top.get_by_role("button", name="Copy").click()
    expect(agent.locator(".timeline")).to_contain_text("Copied the answer")
    assert agent.evaluate("navigator.clipboard.readText()") == answer["answer"]

    top = agent.locator(".answer-card.top")
    top.get_by_role("button", name="Send to customer").click()
    sent = agent.locator('#conversation [data-kind="agent"]')
    expect(sent).to_contain_text(answer["answer"][:20])
    expect(sent).to_contain_text("Sent FAQ entry")
    agent.get_by_role("button", name="Resolve").click()
    expect(agent.locator("#ticket-status")).to_have_text("Resolved")
    shot(agent, "06-console-ticket-resolved", full_page=True)

    ticket.refresh_from_db()
    assert (ticket.status, ticket.assigned_to.username) == ("resolved", "agent")  # type: ignore[union-attr]
    agent_feedback = list(Feedback.objects.filter(source="agent").order_by("pk")
                          .values_list("helpful", "chosen_entry_id", "comment"))
    # Sending the entry is "agent used entry X" (a message), not a rating; resolving is an event.
    assert agent_feedback == [(None, answer["id"], "Copied the answer")]
    assert list(Message.objects.order_by("pk").values_list("kind", "event", "entry_id", "entry_edited")) == [
        ("event", "handed_off", None, None), ("event", "assigned", None, None), ("agent", "", answer["id"], False),
        ("event", "resolved", None, None)]


def test_widget_speaks_english_and_never_renders_faq_html(
    live_server: Any, widget_key: str, demo_kb: KnowledgeBase, new_page: Callable[..., Page], shot: Shot,
) -> None:
    entry = faq_entry_create(kb=demo_kb, data={
        "question": "Why is my gift card <b>blocked</b>?",
        "answer": "Gift cards <img src=x onerror=\"window.__pwned=1\"> are blocked after three wrong PINs. "
                  "Wait one hour and the gift card unblocks itself.",
        "language": "en"})
    faq_entries_embed(entry_ids=[entry.pk])
    page = new_page(locale="zh-CN")  # the host page's language wins over the browser's
    page.goto(f"{live_server.url}/demo/?lang=en")
    page.get_by_role("button", name="Questions? Ask us").click()
    box = page.get_by_role("textbox", name="Your question")
    box.fill("my gift card is blocked")
    box.press("Enter")
    widget = page.locator("#kb-chat-widget")
    expect(widget.locator("mark").first).to_be_visible()
    expect(widget.get_by_text("Why is my gift card <b>blocked</b>?")).to_be_visible()
    expect(widget.get_by_text('<img src=x onerror="window.__pwned=1">', exact=False)).to_be_visible()
    assert widget.locator("img, b, script").count() == 0
    assert page.evaluate("window.__pwned") is None
    shot(page, "07-widget-answer-en")

    # Keyboard only: Escape closes the panel and gives focus back to the launcher.
    page.keyboard.press("Escape")
    expect(page.get_by_role("button", name="Questions? Ask us")).to_be_focused()


def test_widget_says_a_question_is_too_long_and_keeps_every_character(
    live_server: Any, widget_key: str, new_page: Callable[..., Page], settings: Settings,
) -> None:
    settings.KB_MAX_QUESTION_CHARS = 40  # the served script carries the server's limit
    page = new_page(locale="zh-CN")  # the host page's language wins over the browser's
    page.goto(f"{live_server.url}/demo/?lang=en")
    page.get_by_role("button", name="Questions? Ask us").click()
    box = page.get_by_role("textbox", name="Your question")
    pasted = "My gift card is blocked after I typed the PIN wrong 🙈"  # 53 code points, 54 UTF-16 units
    box.fill(pasted)
    widget = page.locator("#kb-chat-widget")
    expect(widget.get_by_text("Your question is 53 characters long; please keep it to 40.")).to_be_visible()
    expect(box).to_have_attribute("aria-invalid", "true")
    box.press("Enter")
    expect(box).to_have_value(pasted)  # not cut, not sent
    assert widget.locator(".msg.user").count() == 0 and Question.objects.count() == 0

    box.fill("my gift card is blocked")
    expect(widget.get_by_text("please keep it to 40", exact=False)).to_be_hidden()
    box.press("Enter")
    expect(widget.locator(".msg.user")).to_have_text("my gift card is blocked")
    expect(widget.get_by_text("Looking for an answer…")).to_have_count(0)
    assert Question.objects.get().text == "my gift card is blocked"
