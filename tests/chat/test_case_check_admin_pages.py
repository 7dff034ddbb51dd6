"""The admin's rollback page and import preview run the regression check like the save page: the check
is shown before anything is written, and a change that breaks cases needs "publish anyway" with a reason,
which the revision records."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from reversion.models import Version

from knowledge.models import FaqEntry, KnowledgeBase, RevisionCheck
from knowledge.resources import FORMATS
from knowledge.services import faq_entry_update
from tests.chat.test_case_checks import add_cases, entry
from tests.conftest import WorkerProcess
from tests.helpers import calibration_in_force

pytestmark = pytest.mark.worker

OFF_TOPIC = {"question": "怎么修改绑定的手机号？", "summary": "在账户设置里更换绑定手机号。",
             "answer": "打开我的-设置-账户安全，选择更换手机号，按提示验证。"}


@pytest.fixture
def checked(shop: KnowledgeBase, rerank_worker: WorkerProcess) -> KnowledgeBase:
    calibration_in_force(shop, answer=0.3, suggest=0.05)
    add_cases(shop)
    return shop


def latest_version(entry_id: int) -> Version:
    version = Version.objects.get_for_model(FaqEntry).filter(object_id=str(entry_id)).order_by("-pk").first()
    assert version is not None
    return version


def test_a_breaking_rollback_shows_the_check_and_needs_publish_anyway_with_a_reason(
    admin_client: Client, checked: KnowledgeBase
) -> None:
    """GIVEN the refund entry once said something off-topic (a revision) and was put right since
    WHEN a manager rolls back to the off-topic revision THEN the page shows the case it breaks, the
    rollback is refused without "publish anyway" and a reason, and then written with both recorded;
    rolling forward again shows the case fixed."""
    refund = entry(checked, "refund")
    good = {field: getattr(refund, field) for field in OFF_TOPIC}
    faq_entry_update(entry_id=refund.pk, expected_version=refund.version, data=OFF_TOPIC)
    off_topic = latest_version(refund.pk)
    faq_entry_update(entry_id=refund.pk, expected_version=refund.version + 1, data=good)
    put_right = latest_version(refund.pk)
    url = f"/admin/knowledge/faqentry/{refund.pk}/history/{off_topic.pk}/"
    version_before = FaqEntry.objects.get(pk=refund.pk).version

    preview = admin_client.get(url).content.decode()

    assert "Regression check: 4 cases — 1 broken, 0 fixed, 3 unchanged" in preview and "✗ broken" in preview
    assert 'name="publish_anyway"' in preview and "退款要几天才能到账" in preview
    assert FaqEntry.objects.get(pk=refund.pk).version == version_before

    refused = admin_client.post(url, {}).content.decode()
    assert "This change breaks 1 regression case(s)" in refused and "✗ broken" in refused
    no_reason = admin_client.post(url, {"publish_anyway": "on", "override_reason": "  "}).content.decode()
    assert "Say why this is published although it breaks regression cases." in no_reason and "✗ broken" in no_reason
    assert FaqEntry.objects.get(pk=refund.pk).version == version_before

    written = admin_client.post(url, {"publish_anyway": "on", "override_reason": "the old wording, on purpose"},
                                follow=True)

    said = [str(message) for message in written.context["messages"]]
    assert any("Regression check: 4 cases, 0 fixed, 1 broken (published anyway)." in m for m in said), said
    assert FaqEntry.objects.get(pk=refund.pk).question == OFF_TOPIC["question"]
    revision = latest_version(refund.pk).revision
    assert "published anyway, 1 case(s) broken: the old wording, on purpose" in revision.comment
    recorded = RevisionCheck.objects.get(revision=revision)
    assert (recorded.forced, recorded.broken, recorded.reason) == (True, 1, "the old wording, on purpose")

    forward = f"/admin/knowledge/faqentry/{refund.pk}/history/{put_right.pk}/"
    assert "1 broken" not in (page := admin_client.get(forward).content.decode()) and "✓ fixed" in page
    assert 'name="publish_anyway"' not in page
    assert admin_client.post(forward, {}).status_code == 302
    revision = latest_version(refund.pk).revision
    assert "case check: 1 fixed, none broken" in revision.comment
    assert RevisionCheck.objects.get(revision=revision).forced is False


IMPORT_URL = "/admin/knowledge/faqentry/import/"
CONFIRM_URL = "/admin/knowledge/faqentry/process_import/"


def upload(client: Client, kb: KnowledgeBase, content: bytes) -> Any:
    csv = str(next(i for i, fmt in enumerate(FORMATS) if fmt.name == "csv"))
    return client.post(IMPORT_URL, {"resource": "0", "kb": str(kb.pk), "format": csv, "language": "",
                                    "import_file": SimpleUploadedFile("faq.csv", content)})


def confirm(client: Client, preview: Any, **override: str) -> list[str]:
    form = preview.context["confirm_form"]
    done = client.post(CONFIRM_URL, {**{name: form[name].value() for name in form.fields
                                        if name not in ("publish_anyway", "override_reason")}, **override},
                       follow=True)
    return [str(message) for message in done.context["messages"]]


def test_an_import_that_breaks_a_case_shows_it_in_the_preview_and_needs_publish_anyway(
    admin_client: Client, checked: KnowledgeBase
) -> None:
    """GIVEN a file that rewrites the refund entry off-topic WHEN a manager previews it THEN the preview
    shows the case it breaks and nothing is written; confirming is refused without "publish anyway" and
    a reason, and with both the rows are written and every revision records the override."""
    refund = entry(checked, "refund")
    content = ("external_id,question,summary,answer\n"
               f"refund,{OFF_TOPIC['question']},{OFF_TOPIC['summary']},{OFF_TOPIC['answer']}\n").encode()

    preview = upload(admin_client, checked, content)

    page = preview.content.decode()
    assert "Regression check: 4 cases — 1 broken, 0 fixed, 3 unchanged" in page and "✗ broken" in page
    assert "This import breaks 1 regression case(s)" in page and 'name="publish_anyway"' in page
    assert FaqEntry.objects.get(pk=refund.pk).version == refund.version
    refused = confirm(admin_client, preview)
    assert any("This import breaks 1 regression case(s); nothing was imported." in m for m in refused), refused
    assert FaqEntry.objects.get(pk=refund.pk).version == refund.version

    no_reason = confirm(admin_client, upload(admin_client, checked, content), publish_anyway="on")
    assert any("Say why it is published anyway." in m for m in no_reason), no_reason
    assert FaqEntry.objects.get(pk=refund.pk).version == refund.version

    done = confirm(admin_client, upload(admin_client, checked, content), publish_anyway="on",
                   override_reason="the new policy file")

    assert any("Import finished: 0 new, 1 updated" in m for m in done), done
    assert FaqEntry.objects.get(pk=refund.pk).question == OFF_TOPIC["question"]
    revision = latest_version(refund.pk).revision
    assert "published anyway, 1 case(s) broken: the new policy file" in revision.comment
    recorded = RevisionCheck.objects.get(revision=revision)
    assert (recorded.forced, recorded.broken, recorded.reason) == (True, 1, "the new policy file")


def test_a_harmless_import_shows_the_check_and_is_written_with_it_noted(
    admin_client: Client, checked: KnowledgeBase
) -> None:
    camera = entry(checked, "camera-crash")
    row = f"camera-crash,{camera.question},{camera.summary},{camera.answer},App\n"
    preview = upload(admin_client, checked, f"external_id,question,summary,answer,category\n{row}".encode())
    page = preview.content.decode()
    assert "Regression check: 4 cases — 0 broken, 0 fixed, 4 unchanged" in page
    assert 'name="publish_anyway"' not in page

    done = confirm(admin_client, preview)

    assert any("Import finished: 0 new, 1 updated" in m for m in done), done
    revision = latest_version(camera.pk).revision
    assert "case check: 0 fixed, none broken" in revision.comment
    assert RevisionCheck.objects.get(revision=revision).forced is False
