"""Writes of regression cases: add (merging near-identical ones), edit, retire, import."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from knowledge import text as kb_text
from knowledge.importing.planning import normalize_question
from knowledge.models import CaseExpect, CaseSource, FaqEntry, KnowledgeBase, RegressionCase
from knowledge.services import Actor, _user

NOTE_CHARS = 2000


@dataclass(frozen=True)
class CaseInput:
    question: str
    expect: str
    entry: FaqEntry | None
    note: str = ""


def regression_case_clean(*, kb: KnowledgeBase, question: Any, expect: Any, entry_id: Any,
                          note: Any = "") -> CaseInput:
    """A case as the user described it, or ValidationError naming each bad field."""
    errors: dict[str, list[str]] = {}
    if not isinstance(question, str) or not question.strip():
        errors["question"] = ["must not be empty"]
    elif kb_text.strip_control_characters(question) != question:
        errors["question"] = ["contains control characters"]
    elif len(question.strip()) > settings.KB_MAX_QUESTION_CHARS:
        errors["question"] = [f"at most {settings.KB_MAX_QUESTION_CHARS} characters"]
    if expect not in CaseExpect.values:
        errors["expect"] = [f"must be one of {', '.join(CaseExpect.values)}"]
    if not isinstance(note, str) or len(note) > NOTE_CHARS:
        errors["note"] = [f"text of at most {NOTE_CHARS} characters"]
    entry = None
    if expect == CaseExpect.NO_ANSWER:
        if entry_id not in (None, ""):
            errors["entry"] = ["a no_answer case names no entry"]
    elif expect in CaseExpect.values:
        if isinstance(entry_id, bool) or not isinstance(entry_id, int):
            errors["entry"] = ["name the entry expected"]
        else:
            # Another knowledge base's entry reads as a missing one: its ids must not be probed.
            entry = FaqEntry.objects.filter(pk=entry_id, kb=kb).first()
            if entry is None:
                errors["entry"] = [f"no entry {entry_id} in knowledge base {kb.slug}"]
    if errors:
        raise ValidationError(errors)
    assert isinstance(question, str) and isinstance(note, str)
    return CaseInput(question=question.strip(), expect=str(expect), entry=entry, note=note.strip())


@transaction.atomic
def regression_case_add(*, kb: KnowledgeBase, case: CaseInput, source: str, source_ref: str = "",
                        created_by: Actor = None) -> tuple[RegressionCase, bool]:
    """Add a case; the same expectation for a near-identical question (normalised text) is merged
    into the existing case (a retired one comes back). Returns the case and whether it is new."""
    if source not in CaseSource.values:
        raise ValidationError({"source": [f"unknown source {source!r}"]})
    found, created = RegressionCase.objects.select_for_update().get_or_create(
        kb=kb, normalized=normalize_question(case.question), expect=case.expect, entry=case.entry,
        defaults={"question": case.question, "source": source, "source_ref": source_ref[:200], "note": case.note,
                  "created_by": _user(created_by)},
    )
    if not created:
        note = found.note
        if case.note and case.note not in found.note:
            note = "\n".join(filter(None, [found.note, case.note]))
        RegressionCase.objects.filter(pk=found.pk).update(occurrences=F("occurrences") + 1, retired_at=None,
                                                          note=note[:NOTE_CHARS], updated_at=timezone.now())
        found.refresh_from_db()
    return found, created


@transaction.atomic
def regression_case_update(*, case_id: int, changes: CaseInput) -> RegressionCase:
    found = RegressionCase.objects.select_for_update().get(pk=case_id)
    found.question, found.expect, found.entry, found.note = (changes.question, changes.expect, changes.entry,
                                                             changes.note)
    found.normalized = normalize_question(changes.question)
    if RegressionCase.objects.filter(kb_id=found.kb_id, normalized=found.normalized, expect=found.expect,
                                     entry=found.entry).exclude(pk=found.pk).exists():
        raise ValidationError({"question": ["another case already expects this of the same question"]})
    found.save()
    return found


def regression_case_retire(*, kb: KnowledgeBase, case_id: int) -> bool:
    """Retire an active case of ``kb``; False if it has none by that id."""
    return bool(RegressionCase.objects.filter(pk=case_id, kb=kb, retired_at__isnull=True)
                .update(retired_at=timezone.now()))


@dataclass
class CasesImport:
    cases: list[CaseInput] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # one per bad line, with its number
    created: int = 0
    merged: int = 0


def regression_cases_parse(*, kb: KnowledgeBase, rows: list[tuple[int, Any]]) -> CasesImport:
    """``(line number, decoded JSON)`` rows in kb_eval's format — ``query``, ``relevant_ids`` (external
    ids) — plus ``expect`` (default: answer, or no_answer when relevant_ids is empty) and ``note``.
    ``entry_id`` names an entry without an external id (what export writes for those)."""
    result = CasesImport()
    by_external = dict(FaqEntry.objects.filter(kb=kb).exclude(external_id=None).values_list("external_id", "pk"))
    for number, row in rows:
        if not isinstance(row, dict):
            result.errors.append(f"line {number}: expected an object with query, relevant_ids, expect")
            continue
        unknown = sorted(set(row) - {"query", "relevant_ids", "expect", "note", "entry_id"})
        relevant = row.get("relevant_ids", [])
        problems = [f"unknown field {name!r}" for name in unknown]
        if not isinstance(relevant, list):
            problems.append("relevant_ids must be a list of external ids")
            relevant = []
        expect = row.get("expect") or (CaseExpect.ANSWER if relevant or row.get("entry_id") else CaseExpect.NO_ANSWER)
        entry_id: Any = row.get("entry_id")
        named = len(problems)
        if relevant and expect != CaseExpect.NO_ANSWER:
            if len(relevant) != 1:
                problems.append("a case expects one entry: give one id in relevant_ids")
            elif str(relevant[0]) not in by_external:
                problems.append(f"relevant_ids: no entry with external id {relevant[0]!r} in {kb.slug}")
            else:
                entry_id = by_external[str(relevant[0])]
        elif relevant:
            entry_id = relevant[0]  # refused below: a no_answer case names no entry
        unresolved = len(problems) > named
        try:
            case = regression_case_clean(kb=kb, question=row.get("query"), expect=expect, entry_id=entry_id,
                                         note=row.get("note", ""))
        except ValidationError as error:
            problems.extend(f"{name}: {' '.join(messages)}" for name, messages in error.message_dict.items()
                            if not (name == "entry" and unresolved))
        if problems:
            result.errors.append(f"line {number}: {'; '.join(problems)}")
        else:
            result.cases.append(case)
    return result


@transaction.atomic
def regression_cases_import(*, kb: KnowledgeBase, parsed: CasesImport, source_ref: str,
                            created_by: Actor = None) -> CasesImport:
    """Write parsed cases, all or nothing: with any bad line nothing is written."""
    if parsed.errors:
        return parsed
    for case in parsed.cases:
        _, created = regression_case_add(kb=kb, case=case, source=CaseSource.IMPORT, source_ref=source_ref,
                                         created_by=created_by)
        parsed.created += created
        parsed.merged += not created
    return parsed


def regression_case_export_row(case: RegressionCase) -> dict[str, Any]:
    row: dict[str, Any] = {"query": case.question, "expect": case.expect, "relevant_ids": []}
    if case.entry is not None:
        if case.entry.external_id:
            row["relevant_ids"] = [case.entry.external_id]
        else:
            row["entry_id"] = case.entry.pk
    if case.note:
        row["note"] = case.note
    return row
