"""Third-party pages under our Content-Security-Policy: the admin and Swagger UI still work, load nothing
from other origins, and the browser refuses nothing (``new_page`` fails a test on any CSP report)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, Request, expect

from knowledge.services import faq_entry_create, knowledge_base_create

pytestmark = pytest.mark.django_db(transaction=True)


def only_own_origin(page: Page, origin: str) -> list[str]:
    """URLs the page requests from anywhere but ``origin``, filled in as the page runs."""
    elsewhere: list[str] = []

    def check(request: Request) -> None:
        if not request.url.startswith((origin, "data:")):
            elsewhere.append(request.url)

    page.on("request", check)
    return elsewhere


def test_swagger_ui_renders_offline_from_the_sidecar(
    live_server: Any, new_page: Callable[..., Page], shot: Callable[..., Path],
) -> None:
    page = new_page()
    elsewhere = only_own_origin(page, live_server.url)
    page.goto(f"{live_server.url}/api/docs/")
    expect(page.locator(".swagger-ui .title")).to_contain_text("kbservice API")
    expect(page.locator(".opblock-summary-path", has_text="/api/v1/ask").first).to_be_visible()
    shot(page, "40-api-docs")
    assert elsewhere == []


def test_admin_changelist_and_export_work_under_the_policy(
    live_server: Any, new_page: Callable[..., Page], staff_user: Callable[..., Any], shot: Callable[..., Path],
) -> None:
    kb = knowledge_base_create(slug="shop", name="Shop")
    faq_entry_create(kb=kb, data={"question": "How do I reset my password?", "answer": "Use the link."})
    page = new_page(user=staff_user("admin"), base_url=live_server.url)
    elsewhere = only_own_origin(page, live_server.url)

    page.goto(f"{live_server.url}/admin/knowledge/faqentry/")
    expect(page.locator("#result_list")).to_contain_text("How do I reset my password?")
    page.locator("#result_list input.action-select").first.check()
    expect(page.locator(".action-counter")).to_contain_text("1 of 1 selected")  # the admin's own script ran

    # import-export's one inline handler (allowed by its hash): "Select all" clears every field box.
    page.goto(f"{live_server.url}/admin/knowledge/faqentry/export/")
    fields = page.locator(".selectable-field-export-row:visible input[type=checkbox]")
    expect(fields.first).to_be_checked()
    page.locator("input.select-toggle").uncheck()
    expect(fields.first).not_to_be_checked()
    shot(page, "41-admin-export")
    assert elsewhere == []
