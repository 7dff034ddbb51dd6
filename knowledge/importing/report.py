"""The one report of an import or a preview: the CLI prints it, `--json` dumps it, the admin shows it."""

from __future__ import annotations

import dataclasses
import unicodedata
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from django.template.defaultfilters import pluralize


class RowAction(StrEnum):
    CREATE = "create"
    UPDATE = "update"
    SKIP = "skip"  # the entry already says exactly this
    ERROR = "error"


@dataclass
class SimilarEntry:
    entry_id: int
    question: str
    score: float  # cosine similarity; 1.0 for the same normalised question


@dataclass
class RowReport:
    number: int
    action: RowAction
    question: str = ""
    external_id: str | None = None
    entry_id: int | None = None
    matched_by: str = ""  # "external_id" or "question" for updates and skips
    changed_fields: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    similar: list[SimilarEntry] = field(default_factory=list)


@dataclass
class ImportReport:
    kb: str
    source: str
    dry_run: bool
    file_format: str = ""
    encoding: str = ""
    number_label: str = "row"
    rows: list[RowReport] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # about the whole file or the write: nothing written
    warnings: list[str] = field(default_factory=list)
    written: bool = False
    # The regression check of the import, given a checker (chat.services.checks.case_check_summary).
    check: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return not self.errors and not self.error_rows

    @property
    def error_rows(self) -> list[RowReport]:
        return [row for row in self.rows if row.action == RowAction.ERROR]

    def count(self, action: RowAction) -> int:
        return sum(1 for row in self.rows if row.action == action)

    @property
    def counts(self) -> dict[str, int]:
        return {action.value: self.count(action) for action in RowAction}

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "ok": self.ok, "counts": self.counts}

    def summary(self) -> str:
        verbs = ("would create", "would update") if not self.written else ("created", "updated")
        counts = self.counts
        detected = ", ".join(part for part in (self.file_format, self.encoding) if part) or "?"
        text = (f"{self.kb} ← {self.source} ({detected}): "
                f"{counts['create']} {verbs[0]}, {counts['update']} {verbs[1]}, {counts['skip']} unchanged, "
                f"{counts['error']} with errors.")
        if self.written:
            return text
        if not self.ok:
            return text + " Nothing was written."
        return text + " Dry run: nothing was written."

    def render_text(self, *, limit: int = 50) -> str:
        """Summary, problems, and a table of every bad row plus up to ``limit`` other notable rows."""
        lines = [self.summary()]
        if self.check is not None:
            check = self.check
            lines.append(f"Regression check: {check['cases']} case{pluralize(check['cases'])} — "
                         f"{check['broken']} broken, {check['fixed']} fixed, {check['unchanged']} unchanged.")
            lines += [f"  {row['outcome'].upper()}: {row['question']} (expected {row['expect']}"
                      f"{' #' + str(row['entry']) if row['entry'] else ''})"
                      for row in check["results"] if row["outcome"] != "unchanged"]
        lines += [f"ERROR: {error}" for error in self.errors]
        lines += [f"warning: {warning}" for warning in self.warnings]
        notable = [row for row in self.rows if row.action != RowAction.SKIP or row.warnings]
        shown = [row for row in notable if row.action == RowAction.ERROR]
        others = [row for row in notable if row.action != RowAction.ERROR]
        shown += others[:limit]
        if shown:
            shown.sort(key=lambda row: row.number)
            lines.append("")
            lines += _table(self.number_label.capitalize(), shown)
        if len(others) > limit:
            lines.append(f"… and {len(others) - limit} more rows to create or update (--json lists them all).")
        return "\n".join(lines)


def _notes(row: RowReport) -> str:
    notes = list(row.errors) + list(row.warnings)
    if row.action == RowAction.UPDATE:
        notes.insert(0, f"#{row.entry_id} by {row.matched_by}: {', '.join(row.changed_fields)}")
    return "; ".join(notes)


def _table(number_title: str, rows: list[RowReport]) -> list[str]:
    columns = [(number_title, 6), ("Action", 7), ("External id", 14), ("Question", 40), ("Notes", 0)]
    out = ["  ".join(_fit(title, width) for title, width in columns).rstrip()]
    for row in rows:
        cells = [str(row.number), row.action.value, row.external_id or "", row.question.replace("\n", " "),
                 _notes(row)]
        out.append("  ".join(_fit(cell, width) for cell, (_, width) in zip(cells, columns, strict=True)).rstrip())
    return out


def _width(text: str) -> int:
    # Chinese characters take two terminal columns; without this the table would not line up.
    return sum(2 if unicodedata.east_asian_width(char) in "WF" else 1 for char in text)


def _fit(text: str, width: int) -> str:
    if not width:
        return text
    if _width(text) > width:
        text = text[:width]
        while _width(text) > width - 1:
            text = text[:-1]
        text += "…"
    return text + " " * (width - _width(text))
