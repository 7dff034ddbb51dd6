"""`manage.py kb_import faq.csv --kb acme [--dry-run] [--json]`: the CLI face of ``knowledge.importing``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from knowledge.importing import FORMATS, faq_entries_import, tqdm_progress
from knowledge.services import LANGUAGE_CODES, knowledge_base_get_or_create


def read_input(path: str) -> tuple[bytes, str]:
    """The file's bytes and name, refusing oversized files before reading them."""
    limit = settings.KB_IMPORT_MAX_BYTES
    if path == "-":
        content = sys.stdin.buffer.read(limit + 1)
        name = "stdin"
    else:
        file = Path(path)
        if not file.is_file():
            raise CommandError(f"No such file: {path}")
        if file.stat().st_size > limit:
            raise CommandError(f"{path} is {file.stat().st_size:,} bytes; the limit is {limit:,} "
                               "(KB_IMPORT_MAX_BYTES). Split it into smaller files.")
        try:
            content = file.read_bytes()
        except OSError as error:
            raise CommandError(f"Cannot read {path}: {error.strerror}") from None
        name = file.name
    if len(content) > limit:
        raise CommandError(f"The input is over {limit:,} bytes (KB_IMPORT_MAX_BYTES). Split it into smaller files.")
    return content, name


def _checker(kb: Any) -> Any:
    """The preview's regression check (chat composes the reranker; imported here, not at load time)."""
    from chat.services.checks import CheckUnavailable, case_check_summary, faq_change_check
    from knowledge.cases.selectors import regression_cases_active

    if not regression_cases_active(kb=kb).exists():
        return None

    def check(write: Any) -> dict[str, Any]:
        try:
            return case_check_summary(faq_change_check(kb=kb, apply=write, trigger="import preview"))
        except CheckUnavailable as error:
            raise CommandError(f"The regression cases could not be checked: {error}") from error

    return check


class Command(BaseCommand):
    help = ("Import FAQ entries (CSV, XLSX, JSON, JSONL or text) into a knowledge base, creating it if needed. "
            "Upserts by external_id; rows without one update the entry with the same question. "
            "Any bad row: nothing is written and every bad row is listed.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", help="File to import, or - for standard input.")
        parser.add_argument("--kb", required=True, help="Slug of the knowledge base.")
        parser.add_argument("--language", choices=sorted(LANGUAGE_CODES), default="",
                            help="Language of rows that name none (and of a knowledge base created now).")
        parser.add_argument("--format", dest="file_format", choices=["auto", *FORMATS], default="auto",
                            help="Default: from the file name, else from the content.")
        parser.add_argument("--dry-run", action="store_true", help="Preview only: report what would change.")
        parser.add_argument("--json", action="store_true", dest="as_json", help="Print the report as JSON.")

    def handle(self, *args: Any, path: str, kb: str, language: str, file_format: str, dry_run: bool,
               as_json: bool, **options: Any) -> None:
        content, name = read_input(path)
        with transaction.atomic():
            try:
                knowledge_base, created = knowledge_base_get_or_create(slug=kb, language=language or None)
            except ValidationError as error:
                raise CommandError(f"Cannot create knowledge base {kb!r}: {'; '.join(error.messages)}") from None
            report = faq_entries_import(kb=knowledge_base, content=content, filename=name, file_format=file_format,
                                        default_language=language, dry_run=dry_run, progress=tqdm_progress,
                                        checker=_checker(knowledge_base) if dry_run else None)
            if not report.written:
                transaction.set_rollback(True)  # a knowledge base created for a failed or dry run goes too
        if as_json:
            self.stdout.write(json.dumps({**report.to_dict(), "kb_created": created and report.written},
                                         ensure_ascii=False, indent=2))
        else:
            if created:
                self.stdout.write(f"Knowledge base {kb!r} {'created' if report.written else 'would be created'}.")
            self.stdout.write(report.render_text())
            if report.written and report.counts["create"] + report.counts["update"]:
                self.stdout.write(self.style.SUCCESS(
                    f"Imported. Embedding runs in the background; `manage.py kb_reembed --kb {kb} --missing` "
                    "embeds now."))
        if not report.ok:
            problems = len(report.errors) + len(report.error_rows)
            raise CommandError(f"Import refused: {problems} problem(s) listed above; nothing was written.")
