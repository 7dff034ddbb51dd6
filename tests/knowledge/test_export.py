"""Exports open where people open them (Excel, editors) and come back through import unchanged."""

from __future__ import annotations

import codecs
import io
import json
from typing import Any

import openpyxl
import pytest
from reversion.models import Version

from knowledge.exporting import faq_entries_export
from knowledge.importing import faq_entries_import
from knowledge.models import FaqEntry, KnowledgeBase
from knowledge.services import knowledge_base_create

ENTRIES: list[dict[str, Any]] = [
    {"external_id": "pay-5003", "question": "扫码支付提示“交易异常，请稍后再试”怎么办？",
     "similar_questions": ["扫码付款说交易异常", "付款码一扫就报错 | 怎么回事"],
     "answer": "请稍后在“我的订单”查看。\n\n如已扣款未到账，请联系客服。", "summary": "支付网关返回码5003",
     "tags": ["支付", "扫码"], "category": "支付", "language": "zh", "status": "published"},
    {"external_id": None, "question": "How do I delete my account?",
     "answer": "=Settings, then Privacy, then \"Delete account\", confirm by e-mail.", "summary": "",
     "tags": [], "category": "", "language": "en", "status": "archived"},
    {"external_id": "42", "question": "Can I pay, in part, by voucher?",
     "similar_questions": ["voucher | card split payment?"], "answer": "- Yes\n- up to 50%",
     "summary": "partial voucher payment", "tags": ["payment"], "category": "billing", "language": "",
     "status": "draft"},
]
FIELDS = ("external_id", "question", "similar_questions", "answer", "summary", "tags", "category", "language",
          "status")


def _load(kb: KnowledgeBase) -> None:
    report = faq_entries_import(kb=kb, content=json.dumps(ENTRIES).encode(), filename="seed.json")
    assert report.written, report.render_text()


def _export(kb: KnowledgeBase, file_format: str) -> bytes:
    stream = io.BytesIO()
    assert faq_entries_export(kb=kb, file_format=file_format, stream=stream) == FaqEntry.objects.filter(kb=kb).count()
    return stream.getvalue()


def _rows(kb: KnowledgeBase, fields: tuple[str, ...] = FIELDS) -> list[tuple[object, ...]]:
    return list(FaqEntry.objects.filter(kb=kb).order_by("pk").values_list(*fields))


@pytest.mark.parametrize("file_format", ["csv", "xlsx", "json", "jsonl", "txt"])
def test_export_reimported_into_its_knowledge_base_changes_nothing(kb: KnowledgeBase, file_format: str) -> None:
    _load(kb)
    versions = Version.objects.count()

    report = faq_entries_import(kb=kb, content=_export(kb, file_format), filename=f"export.{file_format}")

    assert report.ok and report.written, report.render_text()
    assert report.counts == {"create": 0, "update": 0, "skip": 3, "error": 0}
    assert Version.objects.count() == versions


@pytest.mark.parametrize("file_format", ["csv", "xlsx", "json", "jsonl"])
def test_export_imported_elsewhere_recreates_every_field(kb: KnowledgeBase, file_format: str) -> None:
    _load(kb)
    copy = knowledge_base_create(slug=f"copy-{file_format}")

    faq_entries_import(kb=copy, content=_export(kb, file_format), filename=f"export.{file_format}")

    assert _rows(copy) == _rows(kb)
    assert str(_rows(copy)[1][3]).startswith("=Settings")  # not turned into a spreadsheet formula


def test_text_export_carries_questions_and_answers(kb: KnowledgeBase) -> None:
    _load(kb)
    copy = knowledge_base_create(slug="copy-txt")

    content = _export(kb, "txt")
    faq_entries_import(kb=copy, content=content, filename="export.txt")

    assert content.decode().startswith(
        "Q: 扫码支付提示“交易异常，请稍后再试”怎么办？\nA: 请稍后在“我的订单”查看。\n\n如已扣款")
    assert _rows(copy, ("question", "answer")) == _rows(kb, ("question", "answer"))


def test_csv_has_a_bom_and_excel_style_layout(kb: KnowledgeBase) -> None:
    _load(kb)

    content = _export(kb, "csv")

    assert content.startswith(codecs.BOM_UTF8)  # without it Excel shows Chinese as mojibake
    lines = content[len(codecs.BOM_UTF8):].decode().split("\r\n")
    assert lines[0] == ",".join(FIELDS)
    assert lines[1].startswith("pay-5003,扫码支付提示“交易异常，请稍后再试”怎么办？,"
                               "\"扫码付款说交易异常\n付款码一扫就报错 | 怎么回事\",\"请稍后在“我的订单”查看。\n")


def test_xlsx_opens_with_a_header_row(kb: KnowledgeBase) -> None:
    _load(kb)

    sheet = openpyxl.load_workbook(io.BytesIO(_export(kb, "xlsx"))).active
    assert sheet is not None

    rows = list(sheet.iter_rows(values_only=True))
    assert rows[0] == FIELDS
    assert rows[1][:2] == ("pay-5003", "扫码支付提示“交易异常，请稍后再试”怎么办？")
    assert rows[1][2] == "扫码付款说交易异常\n付款码一扫就报错 | 怎么回事"
    assert rows[2][3] == ENTRIES[1]["answer"] and sheet.cell(row=3, column=4).data_type == "s"
    assert rows[1][5] == "支付, 扫码"


def test_empty_knowledge_base_exports_an_importable_file(kb: KnowledgeBase) -> None:
    assert json.loads(_export(kb, "json")) == []
    assert faq_entries_import(kb=kb, content=_export(kb, "csv"), filename="empty.csv").counts["create"] == 0
