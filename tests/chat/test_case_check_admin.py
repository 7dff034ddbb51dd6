"""The admin's save page runs the regression check: broken cases stop the save until "publish anyway" with a
reason, which the revision then records."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from reversion.models import Version

from knowledge.models import CaseCheck, FaqEntry, KnowledgeBase, RegressionCase, RevisionCheck
from tests.chat.conftest import make_kb
from tests.chat.test_case_checks import add_cases, entry
from tests.conftest import WorkerProcess
from tests.helpers import calibration_in_force, wait_until
from tests.knowledge.test_admin import _form

pytestmark = pytest.mark.worker


@pytest.fixture
def checked(shop: KnowledgeBase, rerank_worker: WorkerProcess) -> KnowledgeBase:
    calibration_in_force(shop, answer=0.3, suggest=0.05)
    add_cases(shop)
    return shop


def test_a_breaking_save_shows_the_check_and_needs_publish_anyway_with_a_reason(
    admin_client: Client, checked: KnowledgeBase
) -> None:
    refund = entry(checked, "refund")
    url = f"/admin/knowledge/faqentry/{refund.pk}/change/"

    refused = admin_client.post(url, _form(refund, status="archived"))

    page = refused.content.decode()
    assert refused.status_code == 200
    assert "This change breaks 1 regression case(s)" in page
    assert "Regression check: 4 cases — 1 broken, 0 fixed, 3 unchanged" in page and "✗ broken" in page
    assert FaqEntry.objects.get(pk=refund.pk).status == "published"

    no_reason = admin_client.post(url, _form(refund, status="archived", publish_anyway="on"))
    assert "Say why this is published although it breaks regression cases." in no_reason.content.decode()
    assert FaqEntry.objects.get(pk=refund.pk).status == "published"

    saved = admin_client.post(url, _form(refund, status="archived", publish_anyway="on",
                                         override_reason="replaced by the new refund policy page"))

    assert saved.status_code == 302
    assert FaqEntry.objects.get(pk=refund.pk).status == "archived"
    latest = Version.objects.get_for_object(refund).first()
    assert latest is not None
    assert "published anyway, 1 case(s) broken: replaced by the new refund policy page" in latest.revision.comment
    recorded = RevisionCheck.objects.get(revision=latest.revision)
    assert (recorded.forced, recorded.broken, recorded.reason) == (True, 1, "replaced by the new refund policy page")


def test_a_harmless_save_is_written_with_the_check_noted(admin_client: Client, checked: KnowledgeBase) -> None:
    camera = entry(checked, "camera-crash")
    saved = admin_client.post(f"/admin/knowledge/faqentry/{camera.pk}/change/", _form(camera, category="App"),
                              follow=True)
    assert "Regression check: 4 cases, 0 fixed, 0 broken." in saved.content.decode()
    latest = Version.objects.get_for_object(camera).first()
    assert latest is not None and "case check: 0 fixed, none broken" in latest.revision.comment
    assert RevisionCheck.objects.get(revision=latest.revision).forced is False


def test_a_large_case_set_is_checked_in_the_background_and_the_save_then_uses_that_check(
    admin_client: Client, checked: KnowledgeBase, cpu_worker: WorkerProcess, settings: Any
) -> None:
    """GIVEN more cases than KB_CASES_BACKGROUND_AT WHEN a manager saves THEN the check is queued to the
    Celery worker, nothing is written, the progress page follows it, and saving again uses that check."""
    settings.KB_CASES_BACKGROUND_AT = 2
    refund = entry(checked, "refund")
    url = f"/admin/knowledge/faqentry/{refund.pk}/change/"

    queued = admin_client.post(url, _form(refund, category="Refunds"))

    assert "runs in the background" in queued.content.decode()
    check = CaseCheck.objects.get()
    assert FaqEntry.objects.get(pk=refund.pk).category == ""
    assert f'name="case_check_id" value="{check.pk}"' in queued.content.decode()
    wait_until(lambda: CaseCheck.objects.get(pk=check.pk).status == CaseCheck.Status.DONE, timeout=300)
    progress = admin_client.get(f"/admin/knowledge/faqentry/case-check/{check.pk}/").content.decode()
    assert "Done in" in progress and "Regression check: 4 cases — 0 broken" in progress

    saved = admin_client.post(url, _form(refund, category="Refunds", case_check_id=check.pk))

    assert saved.status_code == 302
    assert FaqEntry.objects.get(pk=refund.pk).category == "Refunds"
    latest = Version.objects.get_for_object(refund).first()
    assert latest is not None and RevisionCheck.objects.get(revision=latest.revision).check_run_id == check.pk
    assert CaseCheck.objects.count() == 1  # the save used the background check, it did not run another


def test_cases_are_added_edited_and_retired_by_hand_in_the_admin(admin_client: Client, shop: KnowledgeBase) -> None:
    refund, address = entry(shop, "refund"), entry(shop, "address")
    other = make_kb("other", [{"external_id": "x", "question": "别的问题", "answer": "别的答案"}])
    url = "/admin/knowledge/regressioncase/add/"
    form = {"kb": shop.pk, "question": "退款多久到账", "expect": "answer", "entry": refund.pk, "note": "by hand"}

    for bad, field_error in (({"entry": FaqEntry.objects.get(kb=other).pk}, "no entry"),
                             ({"question": "  "}, "This field is required"),
                             ({"expect": "no_answer"}, "a no_answer case names no entry")):
        refused = admin_client.post(url, {**form, **bad})
        assert refused.status_code == 200 and field_error in refused.content.decode(), bad
    assert not RegressionCase.objects.exists()

    assert admin_client.post(url, form).status_code == 302
    case = RegressionCase.objects.get()
    assert (case.source, case.entry_id, case.created_by.username) == ("admin", refund.pk, "admin")  # type: ignore[union-attr]
    edited = admin_client.post(f"/admin/knowledge/regressioncase/{case.pk}/change/",
                               {"question": "退款多久到账", "expect": "suggest", "entry": address.pk, "note": ""})
    assert edited.status_code == 302
    case.refresh_from_db()
    assert (case.expect, case.entry_id) == ("suggest", address.pk)
    admin_client.post("/admin/knowledge/regressioncase/", {"action": "retire", "_selected_action": [case.pk]})
    case.refresh_from_db()
    assert case.retired_at is not None


def test_a_bulk_archive_that_breaks_a_case_changes_nothing(admin_client: Client, checked: KnowledgeBase) -> None:
    refund, camera = entry(checked, "refund"), entry(checked, "camera-crash")
    refused = admin_client.post("/admin/knowledge/faqentry/", {"action": "archive",
                                                               "_selected_action": [refund.pk, camera.pk]}, follow=True)
    said = [str(message) for message in refused.context["messages"]]
    refusal = "shop: nothing changed, it would break 1 regression case(s): 退款要几天才能到账"
    assert any(refusal in message for message in said), said
    assert set(FaqEntry.objects.filter(pk__in=[refund.pk, camera.pk]).values_list("status", flat=True)) == {"published"}

    archived = admin_client.post("/admin/knowledge/faqentry/", {"action": "archive", "_selected_action": [camera.pk]},
                                 follow=True)
    assert "Archived 1 entries." in archived.content.decode()
    assert FaqEntry.objects.get(pk=camera.pk).status == "archived"
