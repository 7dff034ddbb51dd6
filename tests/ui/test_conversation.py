"""The loop after a hand-off: the customer asks for a person, an agent claims and replies, the reply
reaches the widget without a reload, the customer answers, the agent sees it, and the history survives
a reload of the host page."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from chat.models import Feedback, Message, Ticket
from tests.ui.conftest import wait_for_answers

pytestmark = pytest.mark.worker

Shot = Callable[..., Path]
# The promise: an agent's reply shows in the widget within 5 s (the widget polls every 3 s).
REPLY_DEADLINE_MS = 5_000


def test_hand_off_reply_answer_resolve_and_reload(
    live_server: Any, widget_key: str, new_page: Callable[..., Page], shot: Shot, staff_user: Callable[..., Any],
) -> None:
    # --- the customer asks, then asks for a person --------------------------------------------------
    page = new_page(locale="en-US")  # the host page says zh-CN: the widget speaks Chinese
    page.goto(f"{live_server.url}/demo/")
    page.get_by_role("button", name="有问题？问我们").click()
    box = page.get_by_role("textbox", name="您的问题")
    box.fill("扫码支付的时候提示交易异常，请稍后再试，怎么办")
    box.press("Enter")
    widget = page.locator("#kb-chat-widget")
    wait_for_answers(1)
    expect(widget.locator("mark").first).to_be_visible()
    widget.locator(".foot").get_by_role("button", name="转人工客服").click()
    expect(widget.get_by_text("已为您转接人工客服", exact=False)).to_be_visible()
    # Once a person is asked for, the offer is gone: not repeated, not left disabled.
    expect(widget.get_by_role("button", name="转人工客服")).to_have_count(0)
    ticket = Ticket.objects.get()
    assert ticket.status == "handed_off"
    page.keyboard.press("Escape")  # the customer closes the panel and waits

    # --- an agent finds it among the unassigned, claims it and replies ------------------------------
    agent_user = staff_user("agent")
    inbox = new_page(user=agent_user, base_url=live_server.url)
    inbox.goto(f"{live_server.url}/console/?assignee=unassigned")
    row = inbox.locator(f'tr[data-ticket="{ticket.public_id}"]')
    expect(row).to_contain_text("Handed off")
    agent = new_page(user=agent_user, base_url=live_server.url)
    agent.goto(f"{live_server.url}/console/tickets/{ticket.public_id}/")
    agent.get_by_role("button", name="Claim").click()
    conversation = agent.locator("#conversation")
    expect(conversation).to_contain_text("Assigned to agent")
    expect(conversation).to_contain_text("Customer asked for a person")
    mine = new_page(user=agent_user, base_url=live_server.url)
    mine.goto(f"{live_server.url}/console/?assignee=mine")
    mine_row = mine.locator(f'tr[data-ticket="{ticket.public_id}"]')
    expect(mine_row).to_contain_text("agent")  # the Agent column

    reply = "您好，我是客服小王。请把交易流水号发给我，我帮您查一下。"
    area = agent.get_by_role("textbox", name="Write a reply")
    area.fill(reply)
    shot(agent, "16-ticket-reply-box")
    area.press("Control+Enter")
    expect(conversation.locator('[data-kind="agent"]')).to_contain_text(reply)

    # --- the reply reaches the closed widget: a count on the button, the text once opened ----------
    launcher = widget.locator(".launcher")
    expect(launcher.locator(".count")).to_have_text("1", timeout=REPLY_DEADLINE_MS)
    launcher.click()
    expect(widget.locator(".msg.agent")).to_contain_text(reply)
    expect(launcher.locator(".count")).to_be_hidden()

    # --- the customer answers the person; the agent sees it without reloading -----------------------
    answer = "流水号是 4200001234"
    box.fill(answer)
    box.press("Enter")
    expect(conversation.locator('[data-kind="customer"]')).to_contain_text(answer)
    expect(mine_row).to_contain_text(answer)  # the inbox row, polled, shows the last message
    assert list(Message.objects.filter(kind="customer").values_list("body", flat=True)) == [answer]
    shot(page, "16-widget-conversation")
    shot(agent, "16-ticket-conversation", full_page=True)

    agent.get_by_role("button", name="Resolve").click()
    expect(agent.locator("#ticket-status")).to_have_text("Resolved")
    expect(widget.get_by_text("本次对话已结束", exact=False)).to_be_visible()

    # --- a reload of the host page brings the conversation back ------------------------------------
    page.reload()
    page.get_by_role("button", name="有问题？问我们").click()
    for text in ("扫码支付的时候提示交易异常", reply, answer, "本次对话已结束"):
        expect(widget.get_by_text(text, exact=False).first).to_be_visible()
    shot(page, "16-widget-after-reload")

    # A free-text reply is conversation, not feedback on any FAQ entry.
    assert Feedback.objects.count() == 0
    agent_reply = Message.objects.get(kind="agent")
    assert (agent_reply.body, agent_reply.entry_id, agent_reply.author_id) == (reply, None, agent_user.pk)
