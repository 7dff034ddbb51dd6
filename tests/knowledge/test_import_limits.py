"""Import limits (KB_IMPORT_MAX_BYTES, KB_IMPORT_MAX_ROWS) on every way in: files over them are refused
before they are read or written anywhere, and rows past the limit are never read."""

from __future__ import annotations

import io
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command
from django.test import Client
from pytest_django.fixtures import Settings

from knowledge.importing import ImportFileError
from knowledge.importing.reading import read_table
from knowledge.models import FaqEntry, KnowledgeBase
from knowledge.resources import FORMATS

IMPORT_URL = "/admin/knowledge/faqentry/import/"
CSV_FORMAT = str(next(i for i, fmt in enumerate(FORMATS) if fmt.name == "csv"))


def test_rows_past_the_limit_are_never_read(settings: Settings) -> None:
    settings.KB_IMPORT_MAX_ROWS = 2
    pulled = 0

    def rows() -> Iterator[tuple[int, list[str]]]:
        nonlocal pulled
        for number in range(1, 100_001):
            pulled += 1
            yield number, ["question"] if number == 1 else [f"Q{number}"]

    with pytest.raises(ImportFileError, match=r"more than 2 entries \(KB_IMPORT_MAX_ROWS\)"):
        read_table(rows(), file_format="csv")
    assert pulled == 4  # the header, two entries, and the one that is too many


def test_kb_import_refuses_an_oversized_file_before_reading_it(
    db: None, settings: Settings, tmp_file: Callable[[str, bytes], Path],
) -> None:
    settings.KB_IMPORT_MAX_BYTES = 1024
    path = tmp_file("faq.csv", b"question\n" + b"Q\n" * 1000)
    with pytest.raises(CommandError, match=r"faq\.csv is 2,009 bytes; the limit is 1,024 \(KB_IMPORT_MAX_BYTES\)"):
        call_command("kb_import", str(path), kb="shop", stdout=io.StringIO())
    assert not KnowledgeBase.objects.filter(slug="shop").exists()


def test_kb_import_reads_no_more_of_standard_input_than_the_limit(
    db: None, settings: Settings, monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings.KB_IMPORT_MAX_BYTES = 1024
    stdin = io.BytesIO(b"question\n" + b"Q\n" * 100_000)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(stdin))
    with pytest.raises(CommandError, match=r"The input is over 1,024 bytes \(KB_IMPORT_MAX_BYTES\)"):
        call_command("kb_import", "-", kb="shop", stdout=io.StringIO())
    assert stdin.tell() == 1025
    assert not KnowledgeBase.objects.filter(slug="shop").exists()


def test_kb_import_over_the_row_limit_says_so_and_writes_nothing(
    db: None, settings: Settings, tmp_file: Callable[[str, bytes], Path],
) -> None:
    settings.KB_IMPORT_MAX_ROWS = 2
    out = io.StringIO()
    with pytest.raises(CommandError, match="Import refused: 1 problem"):
        call_command("kb_import", str(tmp_file("faq.csv", b"question\nQ1\nQ2\nQ3\n")), kb="shop", stdout=out)
    assert "The file has more than 2 entries (KB_IMPORT_MAX_ROWS). Split it into smaller files." in out.getvalue()
    assert not KnowledgeBase.objects.filter(slug="shop").exists()


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("faq.json", b"[" * 100_000, "The JSON is nested too deeply to hold FAQ entries."),
        ("faq.jsonl", b'{"question": "fine"}\n' + b"[" * 100_000 + b"\n", "is JSON nested too deeply to be an entry"),
    ],
)
def test_deeply_nested_json_is_a_clear_refusal_not_a_crash(
    db: None, tmp_file: Callable[[str, bytes], Path], name: str, content: bytes, message: str,
) -> None:
    out = io.StringIO()
    with pytest.raises(CommandError, match="Import refused"):
        call_command("kb_import", str(tmp_file(name, content)), kb="shop", stdout=out)
    assert message in out.getvalue()
    assert FaqEntry.objects.count() == 0


def _upload(client: Client, kb: KnowledgeBase, content: bytes) -> Any:
    return client.post(IMPORT_URL, {"resource": "0", "kb": str(kb.pk), "format": CSV_FORMAT, "language": "",
                                    "import_file": SimpleUploadedFile("faq.csv", content)})


def test_admin_upload_over_the_file_limit_is_refused_on_the_form(
    admin_client: Client, kb: KnowledgeBase, settings: Settings,
) -> None:
    settings.KB_IMPORT_MAX_BYTES = 1024
    response = _upload(admin_client, kb, b"question\n" + b"Q\n" * 1000)
    assert response.status_code == 200
    assert response.context["form"].errors["import_file"] == [
        "The file is 2,009 bytes; the limit is 1,024 (KB_IMPORT_MAX_BYTES). Split it into smaller files."]
    assert FaqEntry.objects.count() == 0

    within = _upload(admin_client, kb, b"question\nQ1\n")
    assert within.status_code == 200 and not within.context["form"].errors
    assert FaqEntry.objects.count() == 0  # a preview: nothing is written before the confirmation


def test_admin_upload_far_over_the_limit_is_413_before_it_is_read(
    admin_client: Client, kb: KnowledgeBase, settings: Settings,
) -> None:
    settings.KB_IMPORT_MAX_BYTES = 1024
    settings.KB_MAX_BODY_BYTES = 1024
    response = _upload(admin_client, kb, b"question\n" + b"Q\n" * 5000)
    assert response.status_code == 413
    assert "the limit is 2,048 bytes (KB_IMPORT_MAX_BYTES)" in response.content.decode()
    assert FaqEntry.objects.count() == 0
