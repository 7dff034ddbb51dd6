"""An agent keeps a question as a check; a manager's later edit of another entry breaks it, the save page says
so, "publish anyway" needs a reason, the revision records it, and a later fix turns the case green."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect
from reversion.models import Version

from chat.models import Question
from chat.services.ask import AskParams, ask
from chat.services.tickets import ticket_hand_off
from knowledge.models import FaqEntry, KnowledgeBase, RegressionCase
from tests.chat.conftest import make_kb
from tests.conftest import WorkerProcess
from tests.helpers import calibration_in_force

pytestmark = pytest.mark.worker

QUESTION = "退款要几天才能到账"
# The address entry rewritten as if it were about refunds: it takes the refund question's answer.
HIJACK = {"question": "退款要几天才能到账？", "summary": "退款到账时效，几天到账",
          "answer": "退款审核通过后原路退回，银行卡一般3到5个工作日到账。"}


def test_a_kept_case_breaks_on_another_entrys_edit_and_turns_green_after_the_fix(
    live_server: Any, transactional_db: None, warm_rerank_worker: WorkerProcess, new_page: Callable[..., Page],
    shot: Callable[..., Path], staff_user: Callable[..., Any],
) -> None:
    shop = make_kb("shop")
    calibration_in_force(shop, answer=0.3, suggest=0.05)
    refund = FaqEntry.objects.get(kb=shop, external_id="refund")
    address = FaqEntry.objects.get(kb=shop, external_id="address")
    # A customer asks, and asks for a person.
    body = ask(kb=KnowledgeBase.objects.get(pk=shop.pk), params=AskParams(question=QUESTION), channel="widget")
    question = Question.objects.select_related("ticket").get(pk=body["question_id"])
    ticket_hand_off(ticket=question.ticket)

    agent = new_page(user=staff_user("agent", username="alice"), base_url=live_server.url)
    agent.goto(f"{live_server.url}/console/tickets/{question.ticket.public_id}/")
    card = agent.locator(f"#question-{question.pk} article[data-entry='{refund.pk}']")
    card.get_by_role("button", name="Send to customer").click()
    keep = agent.locator(f"#question-{question.pk}").get_by_role("button", name="Keep this as a check")
    expect(keep).to_be_visible()
    shot(agent, "15-console-keep-as-check", full_page=True)
    keep.click()
    expect(agent.locator(f"#question-{question.pk}")).to_contain_text("kept as a check")
    case = RegressionCase.objects.get()
    assert (case.question, case.expect, case.entry_id) == (QUESTION, "answer", refund.pk)

    manager = new_page(user=staff_user("knowledge manager", username="kim"), base_url=live_server.url)
    # Each save asks the case twice through the reranker: on two shared cores that can pass 20 s.
    manager.set_default_timeout(120_000)
    change_url = f"{live_server.url}/admin/knowledge/faqentry/{address.pk}/change/"
    manager.goto(change_url)
    for field, value in HIJACK.items():
        manager.locator(f"#id_{field}").fill(value)
    manager.get_by_role("button", name="Save", exact=True).click()
    check = manager.locator("#case-check")
    expect(check).to_contain_text("1 broken")
    expect(check.locator("tr.case-broken")).to_contain_text(QUESTION)
    expect(manager.locator(".errornote, .errorlist").first).to_be_visible()
    shot(manager, "15-admin-save-breaks-a-case", full_page=True)
    assert FaqEntry.objects.get(pk=address.pk).question == "如何修改收货地址？"
    assert Version.objects.get_for_object(address).count() == 1  # the check's trial write left no revision

    manager.locator("#id_publish_anyway").check()
    manager.get_by_role("button", name="Save", exact=True).click()
    expect(manager.locator(".field-override_reason .errorlist")).to_contain_text("Say why")
    assert FaqEntry.objects.get(pk=address.pk).question == "如何修改收货地址？"
    manager.locator("#id_override_reason").fill("Merging the address FAQ into refunds, agreed with support")
    manager.get_by_role("button", name="Save", exact=True).click()
    expect(manager.locator(".messagelist")).to_contain_text("1 broken (published anyway)")
    assert FaqEntry.objects.get(pk=address.pk).question == HIJACK["question"]

    manager.goto(f"{live_server.url}/admin/knowledge/faqentry/{address.pk}/history/")
    expect(manager.locator("#change-history")).to_contain_text(
        "published anyway, 1 case(s) broken: Merging the address FAQ into refunds, agreed with support")
    shot(manager, "15-admin-history-publish-anyway", full_page=True)

    # The fix: the address entry gets its own text back; the check shows the case fixed.
    manager.goto(change_url)
    manager.locator("#id_question").fill("如何修改收货地址？")
    manager.locator("#id_summary").fill("订单收货地址变更")
    manager.locator("#id_answer").fill("订单发货前，在订单详情页点击“修改地址”。发货后请联系快递公司。")
    manager.get_by_role("button", name="Save", exact=True).click()
    expect(manager.locator(".messagelist")).to_contain_text("1 fixed, 0 broken")

    manager.goto(f"{live_server.url}/console/insights/?kb=shop")
    panel = manager.locator("#regression")
    expect(panel.locator(".kpi").filter(has_text="Pass rate, latest check")).to_contain_text("100")
    expect(panel.locator("table.checks tbody tr").first).to_contain_text("edit of entry")
    shot(manager, "15-insights-regression", full_page=True)
