"""A knowledge manager calibrates the demo base from the admin and sees what it buys, there and in insights."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from knowledge.models import Calibration, FaqEntry, KnowledgeBase
from tests.conftest import WorkerProcess
from tests.helpers import calibration_in_force, wait_until

pytestmark = pytest.mark.worker

# Other ways customers ask about the demo entries the browser tests load (tests/ui/conftest.py).
SIMILAR = {
    "demo-zh-001": ["付款的时候提示交易异常请稍后再试", "扫码付钱显示交易异常"],
    "demo-zh-003": ["一个订单扣了我两次钱", "重复扣款了怎么处理"],
    "demo-zh-004": ["钱已经付了订单还是待支付", "付款成功但是订单没变"],
    "demo-zh-014": ["我想退款怎么操作", "在哪里申请退货退款"],
    "demo-zh-015": ["退款几天能到账", "退的钱多久能收到"],
    "demo-zh-023": ["地址填错了还能改吗", "下单以后怎么改收货地址"],
    "demo-zh-029": ["密码忘了怎么办", "登录密码想不起来了"],
    "demo-zh-036": ["我要注销我的账号", "怎么删除账户"],
    "demo-en-004": ["When will I get my refund?", "How many days until my money is back?"],
    "demo-en-007": ["I can't remember my password", "How do I reset my password?"],
    "demo-en-019": ["I want to close my account", "How can I remove my account for good?"],
}


def test_manager_calibrates_a_base_and_sees_the_guarantee_in_admin_and_insights(
    live_server: Any, demo_kb: KnowledgeBase, cpu_worker: WorkerProcess, warm_rerank_worker: WorkerProcess,
    new_page: Callable[..., Page], shot: Callable[..., Path], staff_user: Callable[..., Any],
) -> None:
    """GIVEN the demo base, uncalibrated, with two similar questions on eleven entries
    WHEN a knowledge manager presses Calibrate now on its admin page
    THEN the page shows the target, the guaranteed precision, the coverage, the evidence by source and a
    risk-coverage chart, and so does the console's insights; a calibration of another model is shown as
    not applying (uncalibrated)."""
    FaqEntry.objects.filter(kb=demo_kb).update(similar_questions=[])  # only this test's phrasings count
    for external_id, phrasings in SIMILAR.items():
        FaqEntry.objects.filter(kb=demo_kb, external_id=external_id).update(similar_questions=phrasings)
    page = new_page(user=staff_user("knowledge manager", username="kim"), base_url=live_server.url)
    page.goto(f"{live_server.url}/admin/knowledge/knowledgebase/{demo_kb.pk}/change/")
    panel = page.locator("#calibration-panel")
    expect(panel).to_contain_text("Uncalibrated: this base never auto-answers.")
    shot(page, "14-admin-kb-uncalibrated", full_page=True)

    page.get_by_role("button", name="Calibrate now").click()
    expect(page.locator(".messagelist")).to_contain_text("Calibration of demo queued")
    wait_until(lambda: Calibration.objects.filter(kb=demo_kb).exists(), timeout=300)
    calibration = Calibration.objects.get(kb=demo_kb)
    page.reload()

    expect(panel.locator(".cal-status")).to_have_text("Calibrated")
    expect(panel).to_contain_text(f"{calibration.target_precision} at 95 % confidence")
    expect(panel).to_contain_text(f"{round(calibration.coverage * 100, 1)} % of the evidence questions auto-answered")
    evidence = panel.locator(".cal-evidence tbody tr")
    expect(evidence.filter(has_text="similar questions, entry left out")).to_contain_text("22")
    expect(evidence.filter(has_text="customer thumbs")).to_contain_text("0")
    chart = panel.locator("svg.risk-coverage")
    expect(chart).to_be_visible()
    assert chart.locator("polyline").count() == 2
    # Chinese and English evidence: thresholds fitted and certified per language, each shown.
    assert set(calibration.by_language) == {"zh", "en"}
    expect(panel).to_contain_text("per language")
    for language, fitted in calibration.by_language.items():
        row = panel.locator(".cal-languages tbody tr").filter(has=page.get_by_role("cell", name=language, exact=True))
        expect(row.locator("td").nth(1)).to_have_text(str(fitted["questions"]))
        expect(row.locator("td").nth(2)).to_contain_text(
            "never" if fitted["answer_threshold"] is None else str(fitted["answer_threshold"]))
    if calibration.answer_threshold is not None:  # the pooled figures, for reference
        expect(chart.locator("circle")).to_have_count(1)
    shot(page, "14-admin-kb-calibrated", full_page=True)

    page.goto(f"{live_server.url}/console/insights/?kb=demo")
    section = page.locator("#calibrations")
    expect(section.get_by_role("heading", name="Demo support desk")).to_be_visible()
    expect(section).to_contain_text("Coverage it buys")
    expect(section.locator("svg.risk-coverage")).to_be_visible()
    expect(section.locator(".badge").first).to_have_text(
        "calibrated per language" if calibration.auto_answers else "no auto-answers")
    expect(section.locator("table caption").first).to_contain_text("Fitted per language")
    shot(page, "14-insights-calibrated", full_page=True)

    calibration_in_force(demo_kb, answer=0.5, suggest=0.2, engine="vllm", model="Qwen/Qwen3-Reranker-0.6B")
    page.reload()
    expect(section.locator(".badge").first).to_have_text("uncalibrated")
    expect(section).to_contain_text("Calibrated for vllm / Qwen/Qwen3-Reranker-0.6B, but lite")
    page.goto(f"{live_server.url}/admin/knowledge/knowledgebase/{demo_kb.pk}/change/")
    expect(panel.locator(".cal-status")).to_have_text("Uncalibrated")
    expect(panel).to_contain_text("the reranker now running is lite")
    shot(page, "14-admin-kb-other-engine", full_page=True)
