"""A knowledge manager's rollback and import pages show the regression check as the save page does: a
rollback that breaks a case needs "publish anyway" with a reason, and the import preview lists the broken
case before anything is written."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect
from reversion.models import Version

from knowledge.cases.services import regression_case_add, regression_case_clean
from knowledge.models import CaseExpect, CaseSource, FaqEntry
from knowledge.services import faq_entry_update
from tests.chat.conftest import make_kb
from tests.conftest import WorkerProcess
from tests.helpers import calibration_in_force

pytestmark = pytest.mark.worker

QUESTION = "退款要几天才能到账"
OFF_TOPIC = {"question": "怎么修改绑定的手机号？", "summary": "在账户设置里更换绑定手机号。",
             "answer": "打开我的-设置-账户安全，选择更换手机号，按提示验证。"}


def test_rollback_and_import_pages_show_the_check_and_a_breaking_rollback_needs_a_reason(
    live_server: Any, transactional_db: None, warm_rerank_worker: WorkerProcess, new_page: Callable[..., Page],
    shot: Callable[..., Path], staff_user: Callable[..., Any], tmp_path: Path,
) -> None:
    shop = make_kb("shop")
    calibration_in_force(shop, answer=0.3, suggest=0.05)
    refund = FaqEntry.objects.get(kb=shop, external_id="refund")
    case = regression_case_clean(kb=shop, question=QUESTION, expect=CaseExpect.ANSWER, entry_id=refund.pk)
    regression_case_add(kb=shop, case=case, source=CaseSource.ADMIN)
    good = {field: getattr(refund, field) for field in OFF_TOPIC}
    faq_entry_update(entry_id=refund.pk, expected_version=refund.version, data=OFF_TOPIC)
    off_topic = Version.objects.get_for_object(refund).first()
    assert off_topic is not None
    faq_entry_update(entry_id=refund.pk, expected_version=refund.version + 1, data=good)

    manager = new_page(user=staff_user("knowledge manager", username="kim"), base_url=live_server.url)
    manager.set_default_timeout(120_000)  # each page asks the case twice through the reranker
    manager.goto(f"{live_server.url}/admin/knowledge/faqentry/{refund.pk}/history/{off_topic.pk}/")
    check = manager.locator("#case-check")
    expect(check).to_contain_text("1 broken")
    expect(check.locator("tr.case-broken")).to_contain_text(QUESTION)
    shot(manager, "15-admin-rollback-breaks-a-case", full_page=True)

    manager.locator("#id_publish_anyway").check()
    manager.get_by_role("button", name="Roll back to this revision").click()
    expect(manager.locator("#check-problem")).to_contain_text("Say why")
    assert FaqEntry.objects.get(pk=refund.pk).question == good["question"]
    manager.locator("#id_publish_anyway").check()
    manager.locator("#id_override_reason").fill("Back to the old wording while the refund page is rewritten")
    manager.get_by_role("button", name="Roll back to this revision").click()
    expect(manager.locator(".messagelist")).to_contain_text("1 broken (published anyway)")
    assert FaqEntry.objects.get(pk=refund.pk).question == OFF_TOPIC["question"]
    manager.goto(f"{live_server.url}/admin/knowledge/faqentry/{refund.pk}/history/")
    expect(manager.locator("#change-history")).to_contain_text(
        "published anyway, 1 case(s) broken: Back to the old wording while the refund page is rewritten")

    # An import that would put the refund text right again: the preview shows the case fixed.
    upload = tmp_path / "faq.csv"
    upload.write_text("external_id,question,summary,answer\n"
                      f"refund,{good['question']},{good['summary']},{good['answer']}\n", encoding="utf-8")
    manager.goto(f"{live_server.url}/admin/knowledge/faqentry/import/")
    manager.locator("#id_kb").select_option(str(shop.pk))
    manager.locator("#id_import_file").set_input_files(str(upload))
    manager.locator("#id_format").select_option(label="csv")
    manager.get_by_role("button", name="Submit").click()
    preview = manager.locator("#case-check")
    expect(preview).to_contain_text("0 broken, 1 fixed")
    expect(preview.locator("tr.case-fixed")).to_contain_text(QUESTION)
    shot(manager, "15-admin-import-preview-check", full_page=True)
    assert FaqEntry.objects.get(pk=refund.pk).question == OFF_TOPIC["question"]  # the preview wrote nothing
    manager.get_by_role("button", name="Confirm import").click()
    expect(manager.locator(".messagelist")).to_contain_text("1 updated")
    assert FaqEntry.objects.get(pk=refund.pk).question == good["question"]

    # And one that would break it again: the preview lists the case and asks for "publish anyway" and a reason.
    off_topic_row = f"refund,{OFF_TOPIC['question']},{OFF_TOPIC['summary']},{OFF_TOPIC['answer']}\n"
    upload.write_text(f"external_id,question,summary,answer\n{off_topic_row}", encoding="utf-8")
    manager.goto(f"{live_server.url}/admin/knowledge/faqentry/import/")
    manager.locator("#id_kb").select_option(str(shop.pk))
    manager.locator("#id_import_file").set_input_files(str(upload))
    manager.locator("#id_format").select_option(label="csv")
    manager.get_by_role("button", name="Submit").click()
    expect(manager.locator("#override")).to_contain_text("This import breaks 1 regression case(s)")
    expect(manager.locator("#case-check tr.case-broken")).to_contain_text(QUESTION)
    shot(manager, "15-admin-import-preview-breaks-a-case", full_page=True)
