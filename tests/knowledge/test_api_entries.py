"""FAQ entries through HTTP: CRUD, filters, the optimistic lock, history, and refused input."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from pytest_django.fixtures import Settings
from reversion.models import Version

from knowledge.apis.common import Pagination
from knowledge.models import FaqEntry, KnowledgeBase
from knowledge.services import faq_entry_create, faq_entry_update, knowledge_base_create
from tests.knowledge.test_api_support import call, error_of, secret_key, session

URL = "/api/v1/kbs/acme/entries"


@pytest.fixture
def manager(kb: KnowledgeBase) -> Client:
    return session("maria", group="knowledge manager")


def _snapshot(entry: FaqEntry) -> tuple[object, ...]:
    entry.refresh_from_db()
    return entry.question, entry.answer, entry.status, entry.version, Version.objects.get_for_object(entry).count()


def test_create_then_get_and_list(manager: Client, kb: KnowledgeBase) -> None:
    created = call(manager, "POST", URL, {"question": " 如何退款？ ", "answer": "在订单页申请。", "tags": ["退款"],
                                          "language": "zh"})
    assert created.status_code == 201, created.content
    body = created.json()
    assert (body["question"], body["tags"], body["status"], body["version"]) == ("如何退款？", ["退款"], "published", 1)
    assert body["created_by"] == body["updated_by"] == "maria"
    entry = FaqEntry.objects.get(pk=body["id"])
    assert entry.kb_id == kb.pk and entry.search_vector is not None

    assert call(manager, "GET", f"{URL}/{entry.pk}").json() == body
    listed = call(manager, "GET", URL).json()
    assert (listed["count"], [e["id"] for e in listed["results"]]) == (1, [entry.pk])


def test_list_filters_search_order_and_pages(manager: Client, kb: KnowledgeBase) -> None:
    def make(question: str, **fields: object) -> int:
        return faq_entry_create(kb=kb, data={"question": question, **fields}).pk

    refund = make("How do I get a refund?", answer="Open the order page.", tags=["billing"], category="Orders",
                  language="en")
    invoice = make("Can I pay by invoice?", summary="invoice payment", tags=["billing"], language="en")
    parcel = make("包裹在哪里？", answer="查看物流。", language="zh", status="draft")
    untagged = make("No language here")

    def ids(query: str) -> list[int]:
        response = call(manager, "GET", f"{URL}?{query}")
        assert response.status_code == 200, response.content
        return [entry["id"] for entry in response.json()["results"]]

    assert ids("tag=billing") == [refund, invoice]
    assert ids("language=zh") == [parcel]
    assert ids("language=") == [untagged]
    assert ids("status=draft") == [parcel]
    assert ids("category=Orders") == [refund]
    assert ids("q=ORDER%20page") == [refund]  # answer, case-insensitive
    assert ids("q=invoice%20payment") == [invoice]  # summary
    assert ids("q=物流") == [parcel]
    assert ids("ordering=-id") == [untagged, parcel, invoice, refund]
    page = call(manager, "GET", f"{URL}?limit=2&offset=2").json()
    assert (page["count"], [e["id"] for e in page["results"]], page["next"]) == (4, [parcel, untagged], None)

    bad = call(manager, "GET", f"{URL}?status=deleted&ordering=answer")
    assert bad.status_code == 400
    assert set(error_of(bad)["details"]["fields"]) == {"status", "ordering"}
    assert call(manager, "GET", f"{URL}?offset=99").json()["results"] == []


def test_list_queries_do_not_grow_with_the_page(manager: Client, kb: KnowledgeBase) -> None:
    faq_entry_create(kb=kb, data={"question": "First?"})

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert call(manager, "GET", URL).status_code == 200
        return len(captured)

    one = queries()
    for n in range(5):
        faq_entry_create(kb=kb, data={"question": f"More {n}?"})
    assert queries() == one


def test_a_page_has_a_ceiling(manager: Client, kb: KnowledgeBase, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Pagination, "max_limit", 2)
    for n in range(3):
        faq_entry_create(kb=kb, data={"question": f"Question {n}?"})
    page = call(manager, "GET", f"{URL}?limit=1000").json()
    assert (page["count"], len(page["results"])) == (3, 2)


def test_patch_with_the_version_read_saves_a_revision(manager: Client, kb: KnowledgeBase) -> None:
    entry = faq_entry_create(kb=kb, data={"question": "Shipping cost?", "answer": "Free over 99."})
    response = call(manager, "PATCH", f"{URL}/{entry.pk}", {"version": 1, "answer": "Free over 88.",
                                                            "tags": ["shipping"]})
    assert response.status_code == 200, response.content
    assert (response.json()["answer"], response.json()["tags"], response.json()["version"]) == (
        "Free over 88.", ["shipping"], 2)
    assert response.json()["updated_by"] == "maria"
    latest = Version.objects.get_for_object(entry).first()
    assert latest is not None and latest.revision.user is not None and latest.revision.user.username == "maria"


def test_patch_refuses_read_only_and_unknown_fields(manager: Client, kb: KnowledgeBase) -> None:
    entry = faq_entry_create(kb=kb, data={"question": "Opening hours?"})
    before = _snapshot(entry)
    response = call(manager, "PATCH", f"{URL}/{entry.pk}", {"version": 1, "anwser": "typo", "created_by": "eve"})
    assert response.status_code == 400
    assert error_of(response)["details"]["fields"] == {"anwser": ["Unknown field."],
                                                       "created_by": ["This field is read-only."]}
    assert _snapshot(entry) == before


def test_stale_version_is_409_and_leaves_the_entry_unchanged(manager: Client, kb: KnowledgeBase) -> None:
    entry = faq_entry_create(kb=kb, data={"question": "Reset password?", "answer": "Use the link."})
    faq_entry_update(entry_id=entry.pk, expected_version=1, data={"answer": "Their edit."})
    before = _snapshot(entry)

    response = call(manager, "PATCH", f"{URL}/{entry.pk}", {"version": 1, "answer": "My edit."})

    assert response.status_code == 409
    error = error_of(response)
    assert error["code"] == "conflict"
    details = error["details"]
    assert (details["current_version"], details["expected_version"]) == (2, 1)
    assert (details["current"]["answer"], details["current"]["version"]) == ("Their edit.", 2)
    assert details["submitted"] == {"answer": "My edit."}  # handed back to merge, not lost
    assert _snapshot(entry) == before
    assert before[1] == "Their edit."


def test_patch_needs_a_version(manager: Client, kb: KnowledgeBase) -> None:
    entry = faq_entry_create(kb=kb, data={"question": "Gift cards?"})
    before = _snapshot(entry)
    for version in (None, "1", 1.0, True, 0):
        body = {"answer": "Yes."} if version is None else {"answer": "Yes.", "version": version}
        response = call(manager, "PATCH", f"{URL}/{entry.pk}", body)
        assert response.status_code == 400, version
        assert "version" in error_of(response)["details"]["fields"]
    assert _snapshot(entry) == before


def test_delete_archives_and_keeps_the_entry(manager: Client, kb: KnowledgeBase) -> None:
    entry = faq_entry_create(kb=kb, data={"question": "Old promotion?"})
    response = call(manager, "DELETE", f"{URL}/{entry.pk}")
    assert response.status_code == 200
    assert (response.json()["status"], response.json()["version"]) == ("archived", 2)
    assert FaqEntry.objects.get(pk=entry.pk).status == "archived"
    again = call(manager, "DELETE", f"{URL}/{entry.pk}")  # idempotent: no new revision
    assert (again.status_code, again.json()["version"]) == (200, 2)
    assert Version.objects.get_for_object(entry).count() == 2


def test_revisions_list_and_rollback(manager: Client, kb: KnowledgeBase) -> None:
    entry = faq_entry_create(kb=kb, data={"question": "Refund time?", "answer": "Five days."})
    assert call(manager, "PATCH", f"{URL}/{entry.pk}", {"version": 1, "answer": "Ten days."}).status_code == 200

    revisions = call(manager, "GET", f"{URL}/{entry.pk}/revisions").json()
    assert revisions["count"] == 2
    newest, oldest = revisions["results"]
    assert (newest["user"], newest["comment"], newest["values"]["answer"]) == ("maria", "Edited", "Ten days.")
    assert (oldest["user"], oldest["comment"], oldest["values"]["answer"]) == (None, "Created", "Five days.")
    assert set(oldest["values"]) == {"external_id", "question", "similar_questions", "answer", "summary", "tags",
                                     "category", "language", "status"}
    assert {"id", "date"} <= set(oldest)

    response = call(manager, "POST", f"{URL}/{entry.pk}/rollback", {"revision_id": oldest["id"]})
    assert response.status_code == 200, response.content
    assert (response.json()["answer"], response.json()["version"]) == ("Five days.", 3)
    latest = call(manager, "GET", f"{URL}/{entry.pk}/revisions").json()["results"][0]
    assert latest["comment"] == f"Rolled back to revision {oldest['id']}"


def test_rollback_to_a_revision_of_another_entry_is_refused(manager: Client, kb: KnowledgeBase) -> None:
    entry = faq_entry_create(kb=kb, data={"question": "Mine?"})
    other = faq_entry_create(kb=kb, data={"question": "Theirs?"})
    other_revision = Version.objects.get_for_object(other).get().revision_id
    before = _snapshot(entry)
    for body in ({"revision_id": "1"}, {}, ["revision_id"]):
        response = call(manager, "POST", f"{URL}/{entry.pk}/rollback", body)
        assert response.status_code == 400, body
        assert error_of(response)["code"] == "invalid"
    response = call(manager, "POST", f"{URL}/{entry.pk}/rollback", {"revision_id": other_revision})
    assert response.status_code == 404 and error_of(response)["code"] == "not_found"
    assert _snapshot(entry) == before


def test_entry_of_another_kb_is_404(manager: Client, kb: KnowledgeBase) -> None:
    other_kb = knowledge_base_create(slug="globex")
    theirs = faq_entry_create(kb=other_kb, data={"question": "Secret?", "answer": "Hidden."})
    before = _snapshot(theirs)
    for method, suffix, body in [("GET", "", None), ("PATCH", "", {"version": 1, "answer": "x"}), ("DELETE", "", None),
                                 ("GET", "/revisions", None), ("POST", "/rollback", {"revision_id": 1})]:
        response = call(manager, method, f"{URL}/{theirs.pk}{suffix}", body)
        assert response.status_code == 404, (method, suffix)
        assert error_of(response)["code"] == "not_found"
    assert _snapshot(theirs) == before
    assert call(manager, "GET", f"{URL}/{2**70}").status_code == 404
    assert error_of(call(manager, "GET", "/api/v1/kbs/nope/entries"))["code"] == "not_found"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"question": ""}, "question"),
        ({"question": "   "}, "question"),
        ({"answer": "no question"}, "question"),
        ({"question": "ok", "answer": "x" * 1_000_000}, "answer"),
        ({"question": "bell\x07here"}, "question"),
        ({"question": "nul\x00here"}, "question"),
        ({"question": "ok", "summary": "tab\x0bvertical"}, "summary"),
        ({"question": 42}, "question"),
        ({"question": ["a list"]}, "question"),
        ({"question": "ok", "tags": "not-a-list"}, "tags"),
        ({"question": "ok", "tags": [1, 2]}, "tags"),
        ({"question": "ok", "tags": [f"t{n}" for n in range(51)]}, "tags"),
        ({"question": "ok", "status": "deleted"}, "status"),
        ({"question": "ok", "language": "klingon"}, "language"),
        ({"question": "ok", "colour": "red"}, "colour"),
        ({"question": "ok", "id": 7}, "id"),
    ],
)
def test_bad_entries_are_400_by_field_and_nothing_is_written(
    manager: Client, kb: KnowledgeBase, body: dict[str, object], field: str
) -> None:
    response = call(manager, "POST", URL, body)
    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "invalid"
    assert field in error["details"]["fields"], error
    assert FaqEntry.objects.count() == 0
    assert KnowledgeBase.objects.get(pk=kb.pk).content_generation == kb.content_generation


def test_service_rules_apply_to_patches_too(manager: Client, kb: KnowledgeBase) -> None:
    entry = faq_entry_create(kb=kb, data={"question": "Warranty?"})
    before = _snapshot(entry)
    response = call(manager, "PATCH", f"{URL}/{entry.pk}", {"version": 1, "question": " ", "answer": "a" * 30_000})
    assert response.status_code == 400
    fields = error_of(response)["details"]["fields"]
    assert fields["question"] == ["must not be empty"]
    assert "limit is" in fields["answer"][0]
    assert _snapshot(entry) == before


@pytest.mark.parametrize(
    ("raw", "content_type", "status", "code"),
    [
        ('{"question": "unterminated', "application/json", 400, "parse_error"),
        ("[1, 2, 3]", "application/json", 400, "invalid"),
        ('"just a string"', "application/json", 400, "invalid"),
        ('{"question": NaN}', "application/json", 400, "parse_error"),
        ("question=hi", "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
        ('{"question": "' + "x" * (3 * 1024 * 1024) + '"}', "application/json", 413, "request_too_large"),
    ],
)
def test_unreadable_bodies_are_clear_4xx(
    manager: Client, kb: KnowledgeBase, raw: str, content_type: str, status: int, code: str
) -> None:
    response = manager.post(URL, data=raw, content_type=content_type)
    assert response.status_code == status
    assert error_of(response)["code"] == code
    assert FaqEntry.objects.count() == 0


def test_a_body_django_refuses_to_read_is_413_in_the_error_shape(
    manager: Client, kb: KnowledgeBase, settings: Settings,
) -> None:
    """Past the up-front limit (kbservice.limits) but over Django's own read limit, as a body without a
    Content-Length would be: the project's exception handler answers, not Django's HTML 400 page."""
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    response = manager.post(URL, data='{"question": "' + "x" * 2000 + '"}', content_type="application/json")
    assert response.status_code == 413
    assert error_of(response)["code"] == "request_too_large"
    assert FaqEntry.objects.count() == 0


def test_a_key_writes_without_a_user(kb: KnowledgeBase) -> None:
    headers = secret_key(kb)
    response = call(Client(), "POST", URL, {"question": "Via integration?"}, headers=headers)
    assert response.status_code == 201, response.content
    assert response.json()["created_by"] is None
    revision = Version.objects.get_for_object(FaqEntry.objects.get()).get().revision
    assert revision.user is None
