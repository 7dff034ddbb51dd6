"""FAQ import: one path for the CLI (`kb_import`, `kb_load_demo`) and the admin (django-import-export).

read (bytes → numbered rows) → plan (what each row would do: the preview) → apply (the entry
services, in one transaction). Any row error means nothing is written and the report lists them all.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

from django.db import transaction

from knowledge.importing.planning import (
    NEAR_DUPLICATE_SCORE,
    ImportAborted,
    PlannedRow,
    apply_rows,
    normalize_question,
    plan_rows,
)
from knowledge.importing.progress import Progress, no_progress, tqdm_progress
from knowledge.importing.reading import COLUMNS, FORMATS, ImportFileError, ParsedFile, read_file
from knowledge.importing.report import ImportReport, RowAction, RowReport, SimilarEntry
from knowledge.models import KnowledgeBase
from knowledge.services import Actor, faq_revisions_checked

__all__ = [
    "COLUMNS",
    "FORMATS",
    "NEAR_DUPLICATE_SCORE",
    "Checker",
    "ImportFileError",
    "ImportReport",
    "ParsedFile",
    "Progress",
    "RowAction",
    "RowReport",
    "SimilarEntry",
    "faq_entries_import",
    "faq_entries_import_parsed",
    "no_progress",
    "normalize_question",
    "read_file",
    "tqdm_progress",
]


# Scores the regression cases around a trial write (chat.services.checks composes the reranker, which
# this app does not talk to): given the write, returns the check's summary.
Checker = Callable[[Callable[[], list[int]]], dict[str, Any]]


def faq_entries_import(
    *, kb: KnowledgeBase, content: bytes, filename: str = "", file_format: str = "auto",
    default_language: str = "", dry_run: bool = False, user: Actor = None,
    progress: Progress | None = None, checker: Checker | None = None,
) -> ImportReport:
    """Import (or with ``dry_run`` only preview) a file of FAQ entries into ``kb``."""
    try:
        parsed = read_file(content=content, filename=filename, file_format=file_format)
    except ImportFileError as error:
        report = ImportReport(kb=kb.slug, source=filename or "-", dry_run=dry_run)
        report.file_format = "" if file_format == "auto" else file_format
        report.errors.append(str(error))
        return report
    return faq_entries_import_parsed(kb=kb, parsed=parsed, source=filename or "-", default_language=default_language,
                                     dry_run=dry_run, user=user, progress=progress, checker=checker)


def faq_entries_import_parsed(
    *, kb: KnowledgeBase, parsed: ParsedFile, source: str, default_language: str = "", dry_run: bool = False,
    user: Actor = None, progress: Progress | None = None, checker: Checker | None = None, force: bool = False,
    reason: str = "",
) -> ImportReport:
    """Plan, and unless ``dry_run`` write, the rows of an already read file. Given a ``checker`` the
    report has the regression check of writing the rows (written, scored, rolled back); a write that
    breaks cases is refused unless ``force`` with a ``reason``, and its revisions record the check.

    The write runs in one transaction holding ``kb``'s row lock (``SELECT … FOR UPDATE``), taken
    before planning so that what was planned is what gets written; a dry run takes no lock."""
    progress = progress or no_progress
    user = user if user is not None and user.is_authenticated else None
    report = ImportReport(kb=kb.slug, source=source, dry_run=dry_run, file_format=parsed.file_format,
                          encoding=parsed.encoding, number_label=parsed.number_label, warnings=list(parsed.warnings))
    if not parsed.rows:
        report.warnings.append("The file has no entries.")
    if dry_run:
        planned = plan_rows(kb=kb, parsed=parsed, default_language=default_language, warnings=report.warnings,
                            progress=progress)
        report.rows = [item.report for item in planned]
        _check_rows(kb=kb, planned=planned, report=report, label=parsed.number_label, user=user, source=source,
                    checker=checker)
        return report
    try:
        with transaction.atomic():
            # Serialise imports into one knowledge base: two interleaved plans would create the same rows
            # twice. Edits elsewhere wait anyway, since every write bumps this row's content generation.
            KnowledgeBase.objects.select_for_update().filter(pk=kb.pk).first()
            planned = plan_rows(kb=kb, parsed=parsed, default_language=default_language, warnings=report.warnings,
                                progress=progress)
            report.rows = [item.report for item in planned]
            if not report.ok:
                return report
            check = _check_rows(kb=kb, planned=planned, report=report, label=parsed.number_label, user=user,
                                source=source, checker=checker)
            if check is not None and check["broken"] and not (force and reason.strip()):
                report.errors.append(
                    f"This import breaks {check['broken']} regression case(s); nothing was imported. "
                    + ("Say why it is published anyway." if force else
                       "Tick “Publish anyway” and give a reason to import it all the same."))
                return report
            with faq_revisions_checked(check_id=check["id"], broken=check["broken"], fixed=check["fixed"],
                                       forced=force and check["broken"] > 0,
                                       reason=reason.strip()) if check is not None else nullcontext():
                apply_rows(kb=kb, planned=planned, label=parsed.number_label, user=user,
                           comment=f"Imported from {source}", progress=progress)
            report.written = True
    except ImportAborted as error:
        report.errors.append(str(error))
        for row in report.rows:
            if row.action == RowAction.CREATE:
                row.entry_id = None  # rolled back
    return report


def _check_rows(*, kb: KnowledgeBase, planned: list[PlannedRow], report: ImportReport, label: str, user: Actor,
                source: str, checker: Checker | None) -> dict[str, Any] | None:
    """The regression check of writing the planned rows (into ``report.check``); None without a checker
    or when no row would be written."""
    if checker is None or not report.ok or not any(row.action in (RowAction.CREATE, RowAction.UPDATE)
                                                   for row in report.rows):
        return None

    def write() -> list[int]:
        apply_rows(kb=kb, planned=planned, label=label, user=user, comment=f"Imported from {source}",
                   progress=no_progress)
        return [row.entry_id for row in report.rows if row.entry_id is not None
                and row.action in (RowAction.CREATE, RowAction.UPDATE)]

    report.check = checker(write)
    for row in report.rows:
        if row.action == RowAction.CREATE:
            row.entry_id = None  # the trial write was rolled back
    return report.check
