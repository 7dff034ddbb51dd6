"""Similar questions (相似问): imported, validated, edited, versioned, embedded one by one and indexed."""

from __future__ import annotations

import json

import pytest
from django.test import Client
from reversion.models import Version

from knowledge.importing import faq_entries_import
from knowledge.models import FaqEmbedding, FaqEntry, KnowledgeBase
from knowledge.selectors import faq_fulltext_search, faq_vector_search
from knowledge.services import MAX_SIMILAR_QUESTIONS, faq_entries_embed, faq_entry_create, faq_entry_update
from tests.knowledge.test_api_support import call, error_of, session

URL = "/api/v1/kbs/acme/entries"


def test_a_csv_cell_splits_by_line_or_by_bar(kb: KnowledgeBase) -> None:
    content = ("question,similar_questions\n"
               "如何退款？,\"钱怎么退回来\n不想要了能退吗\n\n钱怎么退回来\"\n"
               "怎么开发票？,开票在哪 | 要报销怎么开票|\n").encode()

    report = faq_entries_import(kb=kb, content=content, filename="faq.csv")

    assert report.ok, report.render_text()
    assert list(FaqEntry.objects.filter(kb=kb).order_by("pk").values_list("similar_questions", flat=True)) == [
        ["钱怎么退回来", "不想要了能退吗"],  # blank lines and repeats are not phrasings
        ["开票在哪", "要报销怎么开票"],
    ]


@pytest.mark.parametrize(
    ("cell", "message"),
    [
        ("\n".join(f"问法{i}" for i in range(200)), f"has 200 phrasings; the limit is {MAX_SIMILAR_QUESTIONS}"),
        ("长" * 10_000, "phrasing 1 is 10000 characters long; the limit is 2000"),
        ("\n".join(str(i) + "问" * 1499 for i in range(6)), "are 9000 characters in all; the limit is 8000"),
    ],
    ids=["200-phrasings", "one-of-10000-chars", "too-much-in-all"],
)
def test_an_oversized_cell_is_a_row_error_and_nothing_is_written(kb: KnowledgeBase, cell: str, message: str) -> None:
    content = json.dumps([{"question": "好的一行"}, {"question": "坏的一行", "similar_questions": cell}]).encode()
    csv_cell = '"' + cell.replace('"', '""') + '"'
    csv_content = f"question,similar_questions\n好的一行,\n坏的一行,{csv_cell}\n".encode()

    for file_content, filename in ((csv_content, "faq.csv"), (content, "faq.json")):
        report = faq_entries_import(kb=kb, content=file_content, filename=filename)

        assert not report.ok and [row.number for row in report.error_rows] == ([3] if filename.endswith("csv") else [2])
        assert any(message in error for error in report.error_rows[0].errors), report.error_rows[0].errors
    assert not FaqEntry.objects.filter(kb=kb).exists()


def test_json_needs_a_list_of_text(kb: KnowledgeBase) -> None:
    content = json.dumps([{"question": "q", "similar_questions": [1, 2]}]).encode()

    report = faq_entries_import(kb=kb, content=content, filename="faq.json")

    assert report.error_rows[0].errors == [
        "similar_questions: must be a list of text, or text with one phrasing per line"]


def test_api_edits_revisions_and_rollback_carry_similar_questions(kb: KnowledgeBase) -> None:
    manager = session("maria", group="knowledge manager")
    created = call(manager, "POST", URL, {"question": "How do I get a refund?", "similar_questions": ["money back?"]})
    assert created.status_code == 201, created.content
    entry_id = created.json()["id"]
    assert created.json()["similar_questions"] == ["money back?"]

    patched = call(manager, "PATCH", f"{URL}/{entry_id}",
                   {"version": 1, "similar_questions": ["money back?", "return and refund"]})
    assert patched.json()["similar_questions"] == ["money back?", "return and refund"]

    revisions = call(manager, "GET", f"{URL}/{entry_id}/revisions").json()["results"]
    assert [r["values"]["similar_questions"] for r in revisions] == [["money back?", "return and refund"],
                                                                     ["money back?"]]
    rolled_back = call(manager, "POST", f"{URL}/{entry_id}/rollback", {"revision_id": revisions[1]["id"]})
    assert rolled_back.json()["similar_questions"] == ["money back?"]
    assert FaqEntry.objects.get(pk=entry_id).similar_questions == ["money back?"]


def test_api_refuses_bad_similar_questions_in_the_error_shape(kb: KnowledgeBase) -> None:
    manager = session("maria", group="knowledge manager")
    for body in ({"question": "q", "similar_questions": "one\ntwo"}, {"question": "q", "similar_questions": [3]},
                 {"question": "q", "similar_questions": ["x"] * (MAX_SIMILAR_QUESTIONS + 1)},
                 {"question": "q", "similar_questions": ["bad\x00text"]}):
        response = call(manager, "POST", URL, body)

        assert response.status_code == 400, (body, response.content)
        assert "similar_questions" in error_of(response)["details"]["fields"]
    assert not FaqEntry.objects.filter(kb=kb).exists()


def test_every_phrasing_is_embedded_and_an_entry_scores_as_its_best_one(kb: KnowledgeBase) -> None:
    refund = faq_entry_create(kb=kb, data={"question": "退款多久到账？", "answer": "原路退回，1-7个工作日。"})
    invoice = faq_entry_create(kb=kb, data={"question": "怎么开电子发票？", "answer": "在订单详情页申请开票。"})
    faq_entries_embed(entry_ids=[refund.pk, invoice.pk])
    query = "公司报销要的那个票据在哪里弄"
    without = {hit.entry_id: hit.score for hit in faq_vector_search(kb=kb, query=query, k=2, exact=True)}

    invoice = faq_entry_update(entry_id=invoice.pk, expected_version=1,
                               data={"similar_questions": ["公司报销需要的票据在哪里开", "发票在哪开"]})
    faq_entries_embed(entry_ids=[invoice.pk])

    assert sorted(FaqEmbedding.objects.filter(entry=invoice).values_list("phrasing", flat=True)) == [0, 1, 2]
    hits = faq_vector_search(kb=kb, query=query, k=2, exact=True)
    assert [hit.entry_id for hit in hits] == [invoice.pk, refund.pk]  # one hit per entry, not per phrasing
    assert hits[0].score > without[invoice.pk] + 0.02
    assert hits[1].score == pytest.approx(without[refund.pk], abs=1e-6)

    invoice = faq_entry_update(entry_id=invoice.pk, expected_version=2, data={"similar_questions": ["发票在哪开"]})
    faq_entries_embed(entry_ids=[invoice.pk])
    assert sorted(FaqEmbedding.objects.filter(entry=invoice).values_list("phrasing", flat=True)) == [0, 1]


def test_full_text_covers_every_phrasing(kb: KnowledgeBase) -> None:
    entry = faq_entry_create(kb=kb, data={"question": "How do I close my account?",
                                          "similar_questions": ["unsubscribe from everything and wipe my profile"]})
    faq_entry_create(kb=kb, data={"question": "How do I change my password?"})

    assert [hit.entry_id for hit in faq_fulltext_search(kb=kb, query="wipe profile", k=5)] == [entry.pk]


def test_an_existing_phrasing_is_reported_as_a_duplicate(kb: KnowledgeBase) -> None:
    existing = faq_entry_create(kb=kb, data={"question": "如何申请退款？", "similar_questions": ["钱怎么退回来？"]})
    content = json.dumps([
        {"question": "钱怎么退回来"},  # another entry's similar question, as a new entry's question
        {"question": "退货流程", "similar_questions": ["如何申请退款"]},  # another entry's question
        {"question": "换货流程", "similar_questions": ["退货流程"]},  # the row above's question
    ]).encode()

    report = faq_entries_import(kb=kb, content=content, filename="new.json", dry_run=True)

    first, second, third = report.rows
    assert [similar.entry_id for similar in first.similar] == [existing.pk]
    assert [similar.entry_id for similar in second.similar] == [existing.pk]
    assert any("entry #" in warning for warning in first.warnings + second.warnings)
    assert third.warnings == ["a phrasing is also in entry 2"]
    assert report.ok  # advice, not a block


def test_admin_edits_one_phrasing_per_line(kb: KnowledgeBase, admin_client: Client) -> None:
    entry = faq_entry_create(kb=kb, data={"question": "如何退款？", "similar_questions": ["钱怎么退"]})
    page = admin_client.get(f"/admin/knowledge/faqentry/{entry.pk}/change/")
    assert "钱怎么退</textarea>" in page.content.decode()

    response = admin_client.post(f"/admin/knowledge/faqentry/{entry.pk}/change/", {
        "question": "如何退款？", "similar_questions": "钱怎么退\r\n不想要了能退吗\r\n", "summary": "", "answer": "",
        "tags": "", "category": "", "language": "zh", "status": "published", "version": entry.version,
        "external_id": "",
    })

    assert response.status_code == 302, response.content.decode()[:2000]
    entry.refresh_from_db()
    assert entry.similar_questions == ["钱怎么退", "不想要了能退吗"]
    assert Version.objects.get_for_object(entry).count() == 2
