"""The rerank workbench in a browser: both modes, ranked cards, sortable matrix, chart, CSV download."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from chat.models import WorkbenchRun
from knowledge.models import KnowledgeBase

pytestmark = pytest.mark.worker

JOB = "熟悉RAG架构，有LangChain项目经验，能独立设计Prompt工程方案，了解向量数据库选型"
RESUMES = """使用LangChain搭建客服问答系统，负责向量检索与Prompt设计，上线后首条命中率提升30%。
---
参与大模型项目，负责数据清洗和标注，熟悉Python与SQL。
---
熟悉Milvus，部署过10亿向量索引，优化特征存储，查询提速3倍。
---
前端开发工程师，熟悉React和Vue，负责电商首页改版。"""


def _column(page: Page, index: int) -> list[str]:
    return page.locator(f"#matrix tbody tr td:nth-child({index})").all_text_contents()


def _chart_drawn(page: Page) -> bool:
    return bool(page.evaluate("""() => {
        const canvas = document.getElementById('score-chart');
        const chart = window.Chart && Chart.getChart(canvas);
        return !!chart && canvas.width > 0 && chart.data.datasets[0].data.length > 0;
    }"""))


def test_workbench_in_both_modes(
    live_server: Any, demo_kb: KnowledgeBase, new_page: Callable[..., Page], shot: Callable[..., Path],
    staff_user: Callable[..., Any],
) -> None:
    page = new_page(user=staff_user("agent"), base_url=live_server.url)
    page.goto(f"{live_server.url}/console/workbench/")
    shot(page, "10-workbench-empty")

    # --- (a) ask the knowledge base through the production path -------------------------------------
    page.get_by_label("Knowledge base", exact=True).select_option("demo")
    page.get_by_label("Query", exact=True).fill("退款多久能到账？")
    page.get_by_role("button", name="Run rerank").click()
    page.wait_for_url("**/console/workbench/runs/*/")
    first = page.locator(".rank-card.first")
    expect(first).to_contain_text("Best match")
    expect(first.locator("mark").first).to_be_visible()
    expect(page.locator(".summary-bar")).to_contain_text("decision")
    assert _chart_drawn(page)
    run = WorkbenchRun.objects.get()
    assert run.mode == "kb" and run.status == "ok", (run.result.get("reason"), run.result["timings_ms"])
    assert first.locator(".title").text_content() == run.result["rows"][0]["title"]
    shot(page, "11-workbench-kb-mode")

    # The matrix sorts by any column, both ways.
    ranks = [int(value) for value in _column(page, 1)]
    assert ranks == sorted(ranks)
    original_header = page.locator("#matrix thead th", has_text="Original #")
    original_header.get_by_role("button").click()
    expect(original_header).to_have_attribute("aria-sort", "ascending")
    assert [int(value) for value in _column(page, 2)] == list(range(1, len(ranks) + 1))
    # A score column sorts highest first on the first click, then the other way.
    rerank_header = page.locator("#matrix thead th", has_text="Rerank")
    rerank_header.get_by_role("button").click()
    expect(rerank_header).to_have_attribute("aria-sort", "descending")
    scores = [float(value) for value in _column(page, 6)]
    assert scores == sorted(scores, reverse=True)
    rerank_header.get_by_role("button").click()
    expect(rerank_header).to_have_attribute("aria-sort", "ascending")
    assert [float(value) for value in _column(page, 6)] == sorted(scores)
    # The embedded engine says it ignores the instruction rather than silently doing so.
    expect(page.locator("#instruction-ignored")).to_contain_text("ignores the instruction")
    page.locator("#matrix").scroll_into_view_if_needed()
    shot(page, "12-workbench-matrix")

    # --- (b) paste a query and documents separated by --- ------------------------------------------
    page.goto(f"{live_server.url}/console/workbench/")
    page.get_by_text("Rerank pasted documents").click()
    expect(page.get_by_label("Knowledge base", exact=True)).to_be_hidden()
    page.get_by_label("Query", exact=True).fill(JOB)
    page.get_by_label("Documents", exact=True).fill(RESUMES)
    page.get_by_label("Instruction").fill("Given a job description, judge whether the résumé matches it")
    page.get_by_role("button", name="Run rerank").click()
    page.wait_for_url("**/console/workbench/runs/*/")
    expect(page.locator(".rank-card")).to_have_count(4)
    expect(page.locator(".rank-card.first mark").first).to_be_visible()
    expect(page.locator(".summary-bar")).to_contain_text("split by dashes")
    assert _chart_drawn(page)
    shot(page, "13-workbench-documents-mode")

    documents_run = WorkbenchRun.objects.get(mode="documents")
    with page.expect_download() as download_info:
        page.get_by_role("link", name="Export CSV").click()
    download = download_info.value
    assert download.suggested_filename == f"workbench-run-{documents_run.pk}.csv"
    raw = Path(download.path()).read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    table = list(csv.reader(io.StringIO(raw.decode("utf-8-sig"))))
    assert table[0] == ["rank", "original_index", "rerank_score", "entry_id", "external_id", "title", "text"]
    expected = [[str(row["rank"]), str(row["index"]), f"{row['scores']['rerank']:.6f}", "", "", "", row["text"]]
                for row in documents_run.result["rows"]]
    assert table[1:] == expected
    assert {row[6] for row in table[1:]} == {part.strip() for part in RESUMES.split("---")}

    # Both runs are in the history, newest first.
    history = page.locator(".history li a").all_text_contents()
    assert history[0].startswith("熟悉RAG架构") and history[1].startswith("退款多久能到账")
