"""The rerank workbench: splitting pasted documents, both modes through the real worker, CSV export."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.test import Client
from pytest_django.fixtures import Settings

from chat.models import AskLog, Ticket, WorkbenchRun
from chat.selectors import InboxFilters, asks_summary, ticket_inbox
from chat.services.workbench import workbench_documents_split
from knowledge.models import KnowledgeBase
from tests.conftest import WorkerProcess

DOCUMENTS = [
    "短信模板审核规范：模板需包含签名，审核一般1个工作日完成。",
    "短信网关熔断应急手册：当出现sms_send_failed错误码时，优先检查短信通道配额是否耗尽。其次验证签名与模板是否通过运营商审核。",
    "如何修改收货地址：订单发货前在订单详情页点击修改地址。",
]


@pytest.mark.parametrize(
    ("text", "split", "expected", "used"),
    [
        ("a\n---\nb\nstill b\n  ---  \n\nc", "auto", ["a", "b\nstill b", "c"], "dashes"),
        ("first para\nline two\n\n\nsecond para", "auto", ["first para\nline two", "second para"], "blank"),
        ("one\r\ntwo\r\n\r\nthree", "lines", ["one", "two", "three"], "lines"),
        ("one\ntwo\nthree\n", "auto", ["one", "two", "three"], "lines"),
        # A spreadsheet column: cells with line breaks come quoted, quotes doubled.
        ('"多行\n单元格"\n简单单元格\n"say ""hi"""\n', "auto", ["多行\n单元格", "简单单元格", 'say "hi"'],
         "spreadsheet"),
        ("title A\tbody A\ntitle B\tbody B", "auto", ["title A\nbody A", "title B\nbody B"], "spreadsheet"),
        ("  \n\n ", "auto", [], "lines"),
    ],
)
def test_documents_split(text: str, split: str, expected: list[str], used: str) -> None:
    assert workbench_documents_split(text=text, split=split) == (expected, used)


def test_unknown_split_is_refused() -> None:
    with pytest.raises(ValidationError):
        workbench_documents_split(text="a", split="commas")


@pytest.fixture
def agent_client(client: Client, staff_user: Callable[..., Any]) -> Client:
    client.force_login(staff_user("agent"))
    return client


def _run(client: Client, **form: str) -> WorkbenchRun:
    response = client.post("/console/workbench/", form)
    assert response.status_code == 303, response.content.decode()[:2000]
    run_id = int(re.search(r"/runs/(\d+)/", response["Location"]).group(1))  # type: ignore[union-attr]
    return WorkbenchRun.objects.get(pk=run_id)


@pytest.mark.worker
def test_pasted_documents_are_reranked_and_exported(
    agent_client: Client, transactional_db: None, rerank_worker: WorkerProcess
) -> None:
    query = "用户投诉下单成功但收不到短信验证码，后台日志显示sms_send_failed"
    run = _run(agent_client, mode="documents", query=query, documents="\n---\n".join(DOCUMENTS),
               split="auto", instruction="")
    assert run.status == "ok" and run.engine and run.model
    rows = run.result["rows"]
    assert [row["rank"] for row in rows] == [1, 2, 3]
    assert sorted(row["index"] for row in rows) == [1, 2, 3]
    assert all(row["text"] == DOCUMENTS[row["index"] - 1] for row in rows)
    scores = [row["scores"]["rerank"] for row in rows]
    assert scores == sorted(scores, reverse=True)
    assert "<mark>" in rows[0]["highlight_html"] and all(not row["highlight_html"] for row in rows[1:])
    assert run.result["split"] == "dashes" and {"rerank", "total"} <= set(run.result["timings_ms"])

    page = agent_client.get(f"/console/workbench/runs/{run.pk}/").content.decode()
    assert 'class="rank-card first"' in page and "Best match" in page and "<mark>" in page
    assert 'id="matrix" data-sortable' in page and 'id="score-data"' in page
    assert query[:20] in page  # the history lists it

    export = agent_client.get(f"/console/workbench/runs/{run.pk}.csv")
    assert export["Content-Type"] == "text/csv; charset=utf-8"
    assert export.content.startswith(b"\xef\xbb\xbf")
    table = list(csv.reader(io.StringIO(export.content.decode("utf-8-sig"))))
    assert export["Content-Disposition"] == f'attachment; filename="workbench-run-{run.pk}.csv"'
    assert table[0] == ["rank", "original_index", "rerank_score", "entry_id", "external_id", "title", "text"]
    assert [row[0] for row in table[1:]] == ["1", "2", "3"]
    assert table[1][1] == str(rows[0]["index"]) and table[1][6] == rows[0]["text"]
    assert float(table[1][2]) == pytest.approx(scores[0], abs=1e-6)


@pytest.mark.worker
def test_csv_defuses_spreadsheet_formulas(
    agent_client: Client, transactional_db: None, rerank_worker: WorkerProcess
) -> None:
    run = _run(agent_client, mode="documents", query="totals", documents="=HYPERLINK(\"http://x\")\nplain text",
               split="lines", instruction="")
    cells = [row[6] for row in csv.reader(io.StringIO(
        agent_client.get(f"/console/workbench/runs/{run.pk}.csv").content.decode("utf-8-sig")))][1:]
    assert sorted(cells) == ["'=HYPERLINK(\"http://x\")", "plain text"]


@pytest.mark.worker
def test_kb_mode_uses_the_ask_path_and_stays_out_of_inbox_and_analytics(
    agent_client: Client, shop: KnowledgeBase, rerank_worker: WorkerProcess
) -> None:
    run = _run(agent_client, mode="kb", kb="shop", query="付款的时候提示交易异常，怎么回事", instruction="")
    result = run.result
    assert run.status == "ok" and result["decision"] in {"answer", "suggest"}
    assert result["stages"] == ["vector", "keyword", "fused", "rerank"]
    assert result["rows"][0]["title"].startswith("扫码支付") and "<mark>" in result["rows"][0]["highlight_html"]
    assert len(result["rows"]) == result["candidates"]  # every candidate the reranker saw
    assert sorted(row["index"] for row in result["rows"]) == list(range(1, len(result["rows"]) + 1))
    assert {"recall_vector", "rerank", "total"} <= set(result["timings_ms"])

    log = AskLog.objects.get()
    assert log.source == "workbench"
    assert Ticket.objects.get().status == "resolved"
    assert list(ticket_inbox(filters=InboxFilters(status="all"))) == []
    from django.utils import timezone

    assert asks_summary(kb=shop, since=timezone.now().replace(year=2000))["total"] == 0


@pytest.mark.worker
def test_unavailable_worker_is_reported_not_raised(
    agent_client: Client, transactional_db: None, settings: Settings, start_worker: object
) -> None:
    settings.KB_RERANK_API_TIMEOUT = 1.0
    settings.KB_RERANK_QUEUE = "rerank-nobody"
    run = _run(agent_client, mode="documents", query="anything", documents="a\nb", split="lines", instruction="")
    assert (run.status, run.result["rows"]) == ("unavailable", [])
    page = agent_client.get(f"/console/workbench/runs/{run.pk}/").content.decode()
    assert "The reranker did not answer" in page


@pytest.mark.django_db
def test_invalid_input_shows_the_form_again(agent_client: Client) -> None:
    response = agent_client.post("/console/workbench/", {"mode": "documents", "query": "  ", "documents": "",
                                                         "split": "auto"})
    assert response.status_code == 400
    page = response.content.decode()
    assert "must not be empty" in page and "paste at least one document" in page
    assert WorkbenchRun.objects.count() == 0
    kb_mode = agent_client.post("/console/workbench/", {"mode": "kb", "kb": "nope", "query": "hi"})
    assert kb_mode.status_code == 400 and "choose a knowledge base" in kb_mode.content.decode()


def test_documents_over_the_character_budget_are_refused_with_the_text_kept(
    agent_client: Client, settings: Settings,
) -> None:
    settings.KB_RERANK_MAX_REQUEST_CHARS = 50
    pasted = "the first pasted document\nthe second pasted document"
    response = agent_client.post("/console/workbench/", {"mode": "documents", "query": "pasted", "documents": pasted,
                                                         "split": "lines"})
    assert response.status_code == 400
    page = response.content.decode()
    # 6 * 2 + 25 + 26 = 63 characters to score.
    assert "asks to score 63 characters" in page and "KB_RERANK_MAX_REQUEST_CHARS" in page
    assert "the second pasted document" in page
    assert WorkbenchRun.objects.count() == 0
