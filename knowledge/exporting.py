"""FAQ export in every format the importer reads; an export re-imported into its knowledge base changes nothing.

CSV is written as UTF-8 with a BOM (Excel otherwise opens Chinese as mojibake). The text format
carries only questions and answers: use JSONL or CSV for a complete copy."""

from __future__ import annotations

import codecs
import csv
import io
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import IO, Any

from knowledge.importing import COLUMNS, FORMATS, Progress, no_progress
from knowledge.models import FaqEntry, KnowledgeBase

CONTENT_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "json": "application/json",
    "jsonl": "application/x-ndjson",
    "txt": "text/plain; charset=utf-8",
}
_CHUNK = 1000


def faq_entry_export_row(*, entry: FaqEntry) -> dict[str, Any]:
    return {column: getattr(entry, column) for column in COLUMNS}


def faq_entries_export(
    *, kb: KnowledgeBase, file_format: str, stream: IO[bytes], progress: Progress | None = None,
) -> int:
    """Write every entry of ``kb`` (oldest first) to ``stream``; returns how many were written."""
    entries = FaqEntry.objects.filter(kb=kb).order_by("pk").only(*COLUMNS)
    total = entries.count()
    rows = (faq_entry_export_row(entry=entry) for entry in entries.iterator(chunk_size=_CHUNK))
    faq_rows_write(rows=(progress or no_progress)(rows, desc="Exporting", total=total),
                   file_format=file_format, stream=stream)
    return total


def faq_rows_render(*, rows: Iterable[Mapping[str, Any]], file_format: str,
                    columns: Sequence[str] = COLUMNS) -> bytes:
    buffer = io.BytesIO()
    faq_rows_write(rows=rows, file_format=file_format, stream=buffer, columns=columns)
    return buffer.getvalue()


def faq_rows_write(*, rows: Iterable[Mapping[str, Any]], file_format: str, stream: IO[bytes],
                   columns: Sequence[str] = COLUMNS) -> None:
    if file_format not in FORMATS:
        raise ValueError(f"unknown export format {file_format!r}; use one of {', '.join(FORMATS)}")
    if file_format == "xlsx":
        _write_xlsx(rows, columns, stream)
        return
    if file_format == "csv":
        stream.write(codecs.BOM_UTF8)
    for chunk in _TEXT_WRITERS[file_format](rows, columns):
        stream.write(chunk.encode("utf-8"))


def _tags_text(value: Any) -> str:
    return ", ".join(value) if isinstance(value, list | tuple) else (value or "")


def _similar_questions_text(value: Any) -> str:
    """One phrasing per line, as the importer reads a cell back; a lone phrasing holding "|" gets a
    line end so that it is not split at the "|"."""
    if not isinstance(value, list | tuple):
        return value or ""
    text = "\n".join(value)
    return text + "\n" if len(value) == 1 and "|" in text else text


def export_cell_text(column: str, value: Any) -> Any:
    if column == "tags":
        return _tags_text(value)
    if column == "similar_questions":
        return _similar_questions_text(value)
    return value


def _csv_lines(rows: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)  # quotes fields with newlines; "\r\n" row ends as Excel writes them
    writer.writerow(columns)
    for row in rows:
        writer.writerow([export_cell_text(c, row.get(c)) or "" for c in columns])
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    yield buffer.getvalue()


def _json_value(column: str, value: Any) -> Any:
    if column == "tags" and isinstance(value, str):
        return [tag.strip() for tag in value.split(",") if tag.strip()]
    if column == "similar_questions" and isinstance(value, str):
        return [line.strip() for line in value.split("\n") if line.strip()]
    return value


def _json_lines(rows: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> Iterator[str]:
    separator = "[\n"
    for row in rows:
        obj = {c: _json_value(c, row.get(c)) for c in columns}
        yield separator + "  " + json.dumps(obj, ensure_ascii=False)
        separator = ",\n"
    yield "[]\n" if separator == "[\n" else "\n]\n"


def _jsonl_lines(rows: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> Iterator[str]:
    for row in rows:
        yield json.dumps({c: _json_value(c, row.get(c)) for c in columns}, ensure_ascii=False) + "\n"


def _text_lines(rows: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> Iterator[str]:
    separator = ""
    for row in rows:
        yield f"{separator}Q: {row.get('question') or ''}\nA: {row.get('answer') or ''}\n"
        separator = "\n---\n\n"


_TEXT_WRITERS = {"csv": _csv_lines, "json": _json_lines, "jsonl": _jsonl_lines, "txt": _text_lines}


def _write_xlsx(rows: Iterable[Mapping[str, Any]], columns: Sequence[str], stream: IO[bytes]) -> None:
    from openpyxl import Workbook
    from openpyxl.cell import WriteOnlyCell

    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet("FAQ")
    sheet.freeze_panes = "A2"
    sheet.append(list(columns))
    for row in rows:
        cells: list[Any] = []
        for column in columns:
            value = export_cell_text(column, row.get(column))
            cell = WriteOnlyCell(sheet, value=value or None)
            # openpyxl stores text that starts with "=" as a formula; Excel would evaluate it and the
            # text would not come back on import.
            if isinstance(value, str) and value:
                cell.data_type = "s"
            cells.append(cell)
        sheet.append(cells)
    workbook.save(stream)
