"""The admin import (django-import-export): upload, preview, confirm, entries written by the services.

Until the FaqEntry admin mixes in ``FaqEntryImportExportMixin``, this module mounts the real
``FaqEntryAdmin`` with the mixin on its own admin site at the same URLs."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission, User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from reversion.models import Version

from knowledge.models import FaqEntry, KnowledgeBase
from knowledge.resources import FORMATS
from knowledge.services import faq_entry_create

if TYPE_CHECKING:
    from django.test.client import _MonkeyPatchedWSGIResponse as Response


IMPORT_URL = "/admin/knowledge/faqentry/import/"
CONFIRM_URL = "/admin/knowledge/faqentry/process_import/"
CSV_FORMAT = str(next(i for i, fmt in enumerate(FORMATS) if fmt.name == "csv"))


def _upload(client: Client, kb: KnowledgeBase, name: str, content: bytes, **extra: str) -> Response:
    data = {"resource": "0", "kb": str(kb.pk), "format": CSV_FORMAT, "language": "",
            "import_file": SimpleUploadedFile(name, content), **extra}
    return client.post(IMPORT_URL, data)


def test_preview_then_confirm_writes_through_the_services(admin_client: Client, kb: KnowledgeBase,
                                                          admin_user: User) -> None:
    existing = faq_entry_create(kb=kb, data={"external_id": "q1", "question": "如何退款？", "answer": "旧的答案"})
    content = ("external_id,question,answer\nq1,如何退款？,在订单页申请退款。\n"
               "q2,如何开发票？,在订单详情页申请电子发票。\n").encode("gbk")

    page = admin_client.get(IMPORT_URL)
    assert page.status_code == 200 and "Knowledge base" in page.content.decode()

    preview = _upload(admin_client, kb, "faq.csv", content, language="zh")

    html = preview.content.decode()
    assert preview.status_code == 200
    assert "Confirm import" in html and "如何开发票？" in html
    assert f"entry #{existing.pk}, matched by external_id: answer" in html
    assert [row.import_type for row in preview.context["result"].rows] == ["update", "new"]
    assert FaqEntry.objects.count() == 1  # the preview wrote nothing
    confirm = preview.context["confirm_form"]

    done = admin_client.post(CONFIRM_URL, {name: confirm[name].value() for name in confirm.fields}, follow=True)

    assert done.status_code == 200
    messages = [str(message) for message in done.context["messages"]]
    assert messages == ["Import finished: 1 new, 1 updated, 0 deleted and 0 skipped FAQ entries."]
    rows = FaqEntry.objects.filter(kb=kb).order_by("pk")
    assert list(rows.values_list("external_id", "answer", "language")) == [
        ("q1", "在订单页申请退款。", "zh"), ("q2", "在订单详情页申请电子发票。", "zh")]
    created = rows.get(external_id="q2")
    assert created.created_by == admin_user
    assert Version.objects.get_for_object(created).get().revision.comment == "Imported from faq.csv"
    assert LogEntry.objects.filter(object_id__in=[str(existing.pk), str(created.pk)]).count() == 2


def test_bad_rows_are_shown_with_file_row_numbers_and_cannot_be_confirmed(
    admin_client: Client, kb: KnowledgeBase,
) -> None:
    preview = _upload(admin_client, kb, "faq.csv", b"question,status\nFine,\n,draft\nAlso fine,deleted\n")

    html = preview.content.decode()
    assert "Some rows failed to validate" in html
    assert "Confirm import" not in html
    assert [row.number for row in preview.context["result"].invalid_rows] == [3, 4]
    assert "must not be empty" in html and "must be one of" in html
    assert FaqEntry.objects.count() == 0


def test_unreadable_file_gets_a_clear_message_on_the_form(admin_client: Client, kb: KnowledgeBase) -> None:
    preview = _upload(admin_client, kb, "faq.csv", b"question\n\x80\x80\xff\n")

    errors = preview.context["form"].errors["import_file"]
    assert errors == ["The file is not valid UTF-8, GBK or GB18030 text: byte 0x80 on line 2 cannot be decoded. "
                      "Save it as “CSV UTF-8” (or UTF-8 text) and import it again; nothing was imported."]
    assert FaqEntry.objects.count() == 0


def test_admin_export_is_the_same_csv_as_the_command_line(admin_client: Client, kb: KnowledgeBase) -> None:
    faq_entry_create(kb=kb, data={"external_id": "q1", "question": "如何退款？", "tags": ["退款", "订单"]})

    fields = {f"faqentryresource_{column}": "on" for column in ("external_id", "question", "answer", "summary",
                                                                "tags", "category", "language", "status")}
    response = admin_client.post("/admin/knowledge/faqentry/export/", {"resource": "0", "format": CSV_FORMAT,
                                                                      **fields})

    assert response.status_code == 200
    assert re.match(r'attachment; filename="FaqEntry-.*\.csv"', response["Content-Disposition"])
    assert response.content.decode("utf-8-sig").splitlines()[:2] == [
        "external_id,question,answer,summary,tags,category,language,status",
        "q1,如何退款？,,,\"退款, 订单\",,,published"]


def test_import_needs_the_rights_to_add_and_change_entries(client: Client, kb: KnowledgeBase) -> None:
    viewer = User.objects.create_user("viewer", password="x", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_faqentry"))
    client.force_login(viewer)

    assert client.get(IMPORT_URL).status_code == 403
    assert _upload(client, kb, "faq.csv", b"question\nHow?\n").status_code == 403
    assert FaqEntry.objects.count() == 0
