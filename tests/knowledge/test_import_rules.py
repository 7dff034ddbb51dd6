"""Preview, upsert, duplicates and refusals: a failing import writes nothing and says exactly why."""

from __future__ import annotations

from typing import Any

import pytest
from pytest_django.fixtures import Settings
from reversion.models import Version

from knowledge.importing import ImportReport, RowAction, faq_entries_import
from knowledge.models import FaqEntry, KnowledgeBase
from knowledge.services import faq_entries_embed, faq_entry_create, faq_entry_update


def _csv(kb: KnowledgeBase, text: str, **kwargs: Any) -> ImportReport:
    return faq_entries_import(kb=kb, content=text.encode(), filename="faq.csv", **kwargs)


def _actions(report: ImportReport) -> list[tuple[int, str]]:
    return [(row.number, row.action.value) for row in report.rows]


def test_bad_rows_are_all_listed_with_their_row_numbers_and_nothing_is_written(kb: KnowledgeBase) -> None:
    text = (
        "external_id,question,answer,status,language\n"
        "a,Good question,Good answer,,\n"
        "b,,An answer without a question,,\n"
        '"c","A question whose answer\nspans lines","line 1\nline 2",,\n'
        "d,Another question,,deleted,\n"
        "e,Klingon?,,,tlh\n"
    )

    report = _csv(kb, text)

    assert not report.ok and not report.written
    assert [(row.number, row.errors) for row in report.error_rows] == [
        (3, ["question: must not be empty"]),
        (5, ["status: must be one of ['draft', 'published', 'archived']"]),
        (6, ["language: must be one of ['en', 'zh'] or empty"]),
    ]
    assert FaqEntry.objects.count() == 0
    assert Version.objects.count() == 0
    table = report.render_text().splitlines()
    assert table[0].endswith("2 would create, 0 would update, 0 unchanged, 3 with errors. Nothing was written.")
    assert [line.split()[:2] for line in table if "must" in line] == [["3", "error"], ["5", "error"], ["6", "error"]]


def test_invalid_bytes_in_every_encoding_are_refused(kb: KnowledgeBase) -> None:
    report = faq_entries_import(kb=kb, content=b"question,answer\nok,\x80\x80\xff\n", filename="faq.csv")

    assert report.errors == [
        "The file is not valid UTF-8, GBK or GB18030 text: byte 0x80 on line 2 cannot be decoded. "
        "Save it as “CSV UTF-8” (or UTF-8 text) and import it again; nothing was imported."
    ]
    assert FaqEntry.objects.count() == 0


def test_utf8_with_a_damaged_byte_is_not_read_as_gbk_mojibake(kb: KnowledgeBase) -> None:
    content = "question,answer\n如何退款？,在订单页申请退款。\n".encode() + b"\xff,x\n"

    report = faq_entries_import(kb=kb, content=content, filename="faq.csv")

    assert report.errors[0].startswith("The file is not valid UTF-8 text: byte 0xFF on line 3")
    assert FaqEntry.objects.count() == 0


def test_missing_question_column_is_refused(kb: KnowledgeBase) -> None:
    report = _csv(kb, "title,answer\nHow?,Like this.\n")
    assert not report.ok
    assert report.errors[0].startswith("The sheet has no `question` column (found: title, answer).")
    assert FaqEntry.objects.count() == 0


def test_unknown_columns_with_data_are_refused_by_name_empty_ones_ignored(kb: KnowledgeBase) -> None:
    refused = _csv(kb, "question,answer,priority,owner\nHow?,Like this.,high,\n")
    assert refused.errors[0].startswith("Unknown columns with data: priority (first in row 2).")
    assert FaqEntry.objects.count() == 0

    accepted = _csv(kb, "question,answer,owner\nHow?,Like this.,\n")
    assert accepted.written
    assert accepted.warnings == ["Ignored empty unknown columns: owner."]
    assert FaqEntry.objects.count() == 1


def test_a_one_megabyte_answer_is_a_row_error_not_a_crash(kb: KnowledgeBase) -> None:
    text = f"question,answer\nShort question,{'长' * 1_000_000}\nFine,Fine\n"

    report = _csv(kb, text)

    assert [(row.number, row.errors) for row in report.error_rows] == [
        (2, ["answer: is 1000000 characters long; the limit is 20000"])]
    assert FaqEntry.objects.count() == 0


def test_size_and_row_limits_are_checked_first(kb: KnowledgeBase, settings: Settings) -> None:
    settings.KB_IMPORT_MAX_ROWS = 2
    report = _csv(kb, "question\nQ1\nQ2\nQ3\n")
    assert report.errors[0].startswith("The file has more than 2 entries (KB_IMPORT_MAX_ROWS)")

    settings.KB_IMPORT_MAX_BYTES = 1024
    report = _csv(kb, "question\n" + "Q\n" * 600)
    assert report.errors[0].startswith("The file is 1,209 bytes; the limit is 1,024")
    assert FaqEntry.objects.count() == 0


def test_a_file_without_entries_says_so(kb: KnowledgeBase) -> None:
    report = _csv(kb, "question,answer\n\n,\n")
    assert report.ok and report.rows == []
    assert report.warnings == ["The file has no entries."]


def test_dry_run_previews_and_writes_nothing(kb: KnowledgeBase) -> None:
    existing = faq_entry_create(kb=kb, data={"external_id": "a", "question": "Old question", "answer": "Old"})
    text = "external_id,question,answer\na,Old question,New answer\nb,Brand new,Hello\n"

    report = _csv(kb, text, dry_run=True)

    assert report.ok and not report.written
    assert _actions(report) == [(2, "update"), (3, "create")]
    assert report.rows[0].changed_fields == ["answer"]
    assert report.rows[0].entry_id == existing.pk
    assert "Dry run: nothing was written." in report.summary()
    assert list(FaqEntry.objects.values_list("answer", flat=True)) == ["Old"]
    assert Version.objects.count() == 1


def test_reimport_is_idempotent(kb: KnowledgeBase) -> None:
    text = ("external_id,question,answer,tags,status\n"
            "a,How do I pay?,By card.,\"payment, card\",published\n"
            ",Where is my parcel?,Track it.,,\n")
    first = _csv(kb, text)
    generation = KnowledgeBase.objects.get(pk=kb.pk).content_generation
    versions = Version.objects.count()

    second = _csv(kb, text)

    assert first.counts["create"] == 2
    assert second.written and _actions(second) == [(2, "skip"), (3, "skip")]
    assert Version.objects.count() == versions == 2
    assert KnowledgeBase.objects.get(pk=kb.pk).content_generation == generation


def test_upsert_by_external_id_and_by_question(kb: KnowledgeBase) -> None:
    by_id = faq_entry_create(kb=kb, data={"external_id": "pay", "question": "How do I pay?", "answer": "Cash."})
    by_question = faq_entry_create(kb=kb, data={"external_id": "ship-7", "question": "Where is my parcel?"})
    text = ("external_id,question,answer,category\n"
            "pay,How can I pay?,By card.,billing\n"
            ",where is my parcel,Track it in Orders.,shipping\n"
            "new-1,Can I get an invoice?,Yes.,billing\n")

    report = _csv(kb, text)

    assert [(row.action, row.matched_by, row.entry_id) for row in report.rows[:2]] == [
        (RowAction.UPDATE, "external_id", by_id.pk), (RowAction.UPDATE, "question", by_question.pk)]
    by_id.refresh_from_db()
    by_question.refresh_from_db()
    assert (by_id.question, by_id.answer, by_id.category, by_id.version) == ("How can I pay?", "By card.", "billing", 2)
    # Matched by its question, the entry keeps its own external id; the question text is updated.
    assert (by_question.external_id, by_question.question, by_question.answer) == (
        "ship-7", "where is my parcel", "Track it in Orders.")
    assert FaqEntry.objects.filter(kb=kb).count() == 3
    assert Version.objects.get_for_object(by_id).first().revision.comment == "Imported from faq.csv"


def test_duplicates_inside_the_file(kb: KnowledgeBase) -> None:
    text = ("external_id,question\n"
            "a,How do I pay?\n"
            "a,How do I refund?\n"        # same external id: which one wins? refuse
            ",Where is my parcel?\n"
            ",WHERE is my parcel ？\n"    # same normalised question, no external id: ambiguous on re-import
            "b,Can I get an invoice?\n"
            "c,Can I get an invoice\n")   # same question, distinct external ids: allowed, but said

    report = _csv(kb, text, dry_run=True)

    assert [(row.number, row.errors) for row in report.error_rows] == [
        (3, ["external_id 'a' is also in row 2"]),
        (5, ["same question as row 4; rows without an external_id are matched by their question, "
             "so it must be unique in the file"]),
    ]
    assert report.rows[5].warnings == ["same question as row 6"]


def test_two_rows_updating_one_entry_are_refused(kb: KnowledgeBase) -> None:
    entry = faq_entry_create(kb=kb, data={"external_id": "x", "question": "How do I pay?"})
    report = _csv(kb, "external_id,question,answer\nx,Payment methods,A\n,how do i pay,B\n", dry_run=True)
    assert [(row.number, row.errors) for row in report.error_rows] == [
        (3, [f"updates entry #{entry.pk}, as row 2 does"])]


def test_exact_and_near_duplicates_already_in_the_knowledge_base_are_reported(kb: KnowledgeBase) -> None:
    address = faq_entry_create(kb=kb, data={"external_id": "addr", "question": "如何修改收货地址？",
                                            "answer": "在订单详情页点击修改地址。"})
    refund = faq_entry_create(kb=kb, data={"question": "如何申请退款？", "answer": "在订单页申请退款。"})
    faq_entries_embed(entry_ids=[address.pk, refund.pk])
    text = ("external_id,question,answer\n"
            "addr-2,如何修改收货地址?,改地址\n"    # same question as addr (full-width ？ vs ?), other id
            "n-1,怎么修改收货地址,去订单页\n"      # a paraphrase
            "n-2,发票抬头可以改吗,可以\n")          # unrelated

    report = _csv(kb, text, dry_run=True)

    assert _actions(report) == [(2, "create"), (3, "create"), (4, "create")]
    exact, near, unrelated = report.rows
    assert [(s.entry_id, s.score) for s in exact.similar] == [(address.pk, 1.0)]
    assert exact.warnings[0].startswith(f"same question as existing entry #{address.pk}")
    assert [s.entry_id for s in near.similar] == [address.pk]
    assert near.similar[0].score >= 0.92
    assert unrelated.similar == [] and unrelated.warnings == []


def test_language_option_fills_rows_without_one(kb: KnowledgeBase) -> None:
    _csv(kb, "question,language\nHow do I pay?,\n如何付款？,zh\n", default_language="en")
    assert list(FaqEntry.objects.order_by("pk").values_list("language", flat=True)) == ["en", "zh"]


def test_a_concurrent_edit_between_plan_and_write_aborts_everything(
    kb: KnowledgeBase, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """GIVEN someone saves entry `a` after the import read its version."""
    from knowledge.importing import planning

    entry = faq_entry_create(kb=kb, data={"external_id": "a", "question": "How do I pay?"})
    original = planning._compare_with_entries

    def compare_then_someone_edits(planned: list[planning.PlannedRow]) -> None:
        original(planned)
        faq_entry_update(entry_id=entry.pk, expected_version=1, data={"answer": "Edited meanwhile"})

    monkeypatch.setattr(planning, "_compare_with_entries", compare_then_someone_edits)

    report = _csv(kb, "external_id,question,answer\nnew,A new one,Hi\na,How do I pay?,By card\n")

    assert not report.written
    assert report.errors[0].startswith("Row 3: FAQ entry")
    assert "Nothing was imported" in report.errors[0]
    assert not FaqEntry.objects.filter(external_id="new").exists()
    entry.refresh_from_db()
    assert entry.answer == ""  # the edit made inside the import's transaction rolled back with it
