"""The FAQ entry list and the revision comparison as a knowledge manager sees them at 1280x800."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect
from reversion.models import Version

from knowledge.management.commands.kb_load_demo import DEMO_FILE
from knowledge.services import faq_entry_create, faq_entry_update, knowledge_base_create

pytestmark = pytest.mark.django_db(transaction=True)


def test_entry_list_and_compare_view_are_readable(
    live_server: Any, new_page: Callable[..., Page], staff_user: Callable[..., Any], shot: Callable[..., Path],
) -> None:
    kb = knowledge_base_create(slug="demo", name="Demo support desk")
    rows = [json.loads(line) for line in DEMO_FILE.read_text(encoding="utf-8").splitlines() if line.strip()][:25]
    entries = [faq_entry_create(kb=kb, data=row) for row in rows]
    edited = entries[0]
    sentences = edited.answer.split("。")
    changed = edited.answer.replace(sentences[0], sentences[0] + "（已更新：请先刷新订单页）", 1)
    faq_entry_update(entry_id=edited.pk, expected_version=1, data={"answer": changed})
    page = new_page(user=staff_user("knowledge manager"), base_url=live_server.url)

    page.goto(f"{live_server.url}/admin/knowledge/faqentry/")
    expect(page.locator("#site-name")).to_contain_text("kbservice admin")
    expect(page.get_by_text("Recover deleted", exact=False)).to_have_count(0)
    table = page.locator("#result_list")
    expect(table).to_contain_text(rows[1]["question"])
    # The question column takes most of the table, and the table fits the window (no sideways scroll).
    question_width = page.locator("#result_list th.column-question").bounding_box()["width"]  # type: ignore[index]
    table_box = table.bounding_box()
    assert table_box is not None and question_width > 0.45 * table_box["width"]
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    shot(page, "16-admin-entry-list")

    first, second = Version.objects.get_for_object(edited).order_by("pk")
    page.goto(f"{live_server.url}/admin/knowledge/faqentry/{edited.pk}/history/compare/"
              f"?version_id1={first.pk}&version_id2={second.pk}")
    diff = page.locator("ol.sentence-diff").first
    expect(diff.locator("li.removed del")).to_have_text(sentences[0] + "。")
    expect(diff.locator("li.added ins")).to_contain_text("已更新：请先刷新订单页")
    expect(page.locator("#content-main h3", has_text="Kb")).to_have_count(0)
    expect(page.locator("#content-main h3", has_text="Created by")).to_have_count(0)
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")  # long answers wrap
    shot(page, "16-admin-compare")
