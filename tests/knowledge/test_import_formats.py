"""Every input format and encoding a knowledge manager brings lands as the same entries."""

from __future__ import annotations

import codecs
import io
import json
from typing import Any

import openpyxl
import pytest
from reversion.models import Version

from knowledge.importing import ImportReport, faq_entries_import
from knowledge.models import FaqEntry, KnowledgeBase

CSV_TEXT = (
    "external_id,question,answer,tags,language\n"
    "pay-1,扫码支付提示“交易异常”怎么办？,请稍后在订单页查看支付状态。,\"支付, 扫码\",zh\n"
    "addr-1,如何修改收货地址？,\"在订单详情页点击修改地址。\n发货后无法修改。\",物流,zh\n"
)


def _import(kb: KnowledgeBase, content: bytes, filename: str, **kwargs: Any) -> ImportReport:
    return faq_entries_import(kb=kb, content=content, filename=filename, **kwargs)


def _entries(kb: KnowledgeBase) -> list[tuple[Any, ...]]:
    return list(FaqEntry.objects.filter(kb=kb).order_by("pk").values_list("external_id", "question", "answer", "tags"))


EXPECTED_CSV_ENTRIES = [
    ("pay-1", "扫码支付提示“交易异常”怎么办？", "请稍后在订单页查看支付状态。", ["支付", "扫码"]),
    ("addr-1", "如何修改收货地址？", "在订单详情页点击修改地址。\n发货后无法修改。", ["物流"]),
]


@pytest.mark.parametrize(
    ("content", "encoding"),
    [
        (CSV_TEXT.encode("utf-8"), "utf-8"),
        (codecs.BOM_UTF8 + CSV_TEXT.encode("utf-8"), "utf-8-sig"),
        (CSV_TEXT.replace("\n", "\r\n").encode("gbk"), "gbk"),  # what Chinese Excel's "CSV" writes
    ],
    ids=["utf8", "utf8-bom", "gbk"],
)
def test_csv_in_every_encoding_excel_writes(kb: KnowledgeBase, content: bytes, encoding: str) -> None:
    report = _import(kb, content, "faq.csv")

    assert report.ok and report.written, report.render_text()
    assert (report.file_format, report.encoding) == ("csv", encoding)
    assert _entries(kb) == EXPECTED_CSV_ENTRIES  # the BOM did not stick to `external_id`
    assert Version.objects.count() == 2


def test_gb18030_csv_with_characters_outside_gbk(kb: KnowledgeBase) -> None:
    """GIVEN a name only GB18030 can encode (𠮷 is four bytes there, absent from GBK)."""
    content = "question,answer\n𠮷野家的订单怎么退？,请在订单页申请退款。\n".encode("gb18030")

    report = _import(kb, content, "faq.csv")

    assert report.encoding == "gb18030"
    assert _entries(kb) == [(None, "𠮷野家的订单怎么退？", "请在订单页申请退款。", [])]


def test_tab_separated_and_capitalised_headers(kb: KnowledgeBase) -> None:
    content = "ID\tQuestion\tAnswer\nt-1\tHow do I reset my password?\tUse the link on the login page.\n"
    report = _import(kb, content.encode(), "faq.tsv")
    assert report.ok
    assert _entries(kb) == [("t-1", "How do I reset my password?", "Use the link on the login page.", [])]


def _xlsx(rows: list[list[Any]]) -> bytes:
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    assert sheet is not None
    for row in rows:
        sheet.append(row)
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def test_xlsx_with_numeric_ids_and_row_numbers_as_excel_shows_them(kb: KnowledgeBase) -> None:
    content = _xlsx([
        ["external_id", "question", "answer", "tags", "status"],
        [1001, "如何开发票？", "在订单详情页申请电子发票。", "发票", "draft"],
        [None, None, None, None, None],  # an empty row in the middle is skipped, not an error
        [1002.0, "", "no question here", None, None],
    ])

    report = _import(kb, content, "faq.xlsx")

    assert [(row.number, row.errors) for row in report.error_rows] == [(4, ["question: must not be empty"])]
    assert FaqEntry.objects.count() == 0

    fixed = _xlsx([["external_id", "question", "answer", "tags", "status"],
                   [1001, "如何开发票？", "在订单详情页申请电子发票。", "发票", "draft"]])
    report = _import(kb, fixed, "faq.xlsx")
    assert report.written
    entry = FaqEntry.objects.get()
    assert (entry.external_id, entry.tags, entry.status) == ("1001", ["发票"], "draft")


def test_xlsx_without_question_column_is_refused(kb: KnowledgeBase) -> None:
    report = _import(kb, _xlsx([["title", "answer"], ["How?", "Like this."]]), "faq.xlsx")

    assert not report.ok and not report.written
    assert "no `question` column (found: title, answer)" in report.errors[0]
    assert FaqEntry.objects.count() == 0


def test_json_array_with_id_alias_and_tag_list(kb: KnowledgeBase) -> None:
    content = json.dumps([
        {"id": 7, "question": "How do I delete my account?", "answer": "Settings → Privacy.",
         "tags": ["account", "privacy"], "language": "en"},
        {"question": "Where is my parcel?", "answer": "Track it in Orders.", "summary": None},
    ], ensure_ascii=False).encode()

    report = _import(kb, content, "faq.json")

    assert report.ok and report.number_label == "entry"
    assert _entries(kb) == [("7", "How do I delete my account?", "Settings → Privacy.", ["account", "privacy"]),
                            (None, "Where is my parcel?", "Track it in Orders.", [])]


def test_json_that_is_not_an_array_is_refused(kb: KnowledgeBase) -> None:
    report = _import(kb, b'"just a string"', "faq.json")
    assert report.errors == ['The JSON file must hold an array of objects: [{"question": …}, …].']


def test_jsonl_errors_carry_line_numbers(kb: KnowledgeBase) -> None:
    content = (
        b'{"external_id": "a", "question": "Question A", "answer": "Answer A"}\n'
        b"\n"
        b'{"external_id": "b", "question": "Question B"\n'
        b'["not", "an", "object"]\n'
        b'{"external_id": "c", "question": "Question C", "status": "gone"}\n'
    )

    report = _import(kb, content, "faq.jsonl")

    assert [(row.number, row.errors[0][:24]) for row in report.error_rows] == [
        (3, "is not valid JSON (Expec"), (4, "is list, expected an obj"), (5, "status: must be one of [")]
    assert FaqEntry.objects.count() == 0


def test_text_separated_by_blank_lines(kb: KnowledgeBase) -> None:
    content = ("如何退款？\n在订单页申请退款，\n3个工作日内到账。\n\n\n"
               "How do I reset my password?\nUse the link on the login page.\n").encode()

    report = _import(kb, content, "faq.txt")

    assert report.ok and report.number_label == "entry"
    assert _entries(kb) == [(None, "如何退款？", "在订单页申请退款，\n3个工作日内到账。", []),
                            (None, "How do I reset my password?", "Use the link on the login page.", [])]


def test_text_separated_by_dashes_keeps_paragraphs(kb: KnowledgeBase) -> None:
    content = ("How do I change my email?\nOpen Profile.\n\nThen confirm the new address.\n"
               "---\n\n如何开发票？\n在订单详情页申请。\n-----\n").encode()

    report = _import(kb, content, "faq.txt")

    assert _entries(kb) == [
        (None, "How do I change my email?", "Open Profile.\n\nThen confirm the new address.", []),
        (None, "如何开发票？", "在订单详情页申请。", []),
    ]
    assert report.counts["create"] == 2


def test_text_with_question_and_answer_prefixes(kb: KnowledgeBase) -> None:
    content = ("Q: How do I cancel an order?\nA: Open the order.\n\nPress Cancel.\n"
               "问：可以开发票吗？\n答：可以，在订单页申请。\n"
               "Q: A question that\nspans two lines?\nA: Yes.\n").encode()

    _import(kb, content, "faq.txt")

    assert [(q, a) for _, q, a, _ in _entries(kb)] == [
        ("How do I cancel an order?", "Open the order.\n\nPress Cancel."),
        ("可以开发票吗？", "可以，在订单页申请。"),
        ("A question that\nspans two lines?", "Yes."),
    ]


def test_format_is_detected_from_content_without_a_file_name(kb: KnowledgeBase) -> None:
    assert _import(kb, b'[{"question": "Q1"}]', "", dry_run=True).file_format == "json"
    assert _import(kb, b'{"question": "Q1"}\n', "", dry_run=True).file_format == "jsonl"
    assert _import(kb, b"question,answer\nQ1,A1\n", "", dry_run=True).file_format == "csv"
    assert _import(kb, b"Q1\nA1\n", "", dry_run=True).file_format == "txt"
    assert _import(kb, _xlsx([["question"], ["Q1"]]), "", dry_run=True).file_format == "xlsx"
