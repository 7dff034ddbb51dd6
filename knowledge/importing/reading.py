"""Turn the bytes of an uploaded file into numbered rows of known columns.

Nothing here touches the database: every problem that makes the whole file unusable raises
``ImportFileError`` with a message a knowledge manager can act on; problems of single rows are
kept on the row so the report can list all of them at once."""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time
from pathlib import PurePath
from typing import Any

from django.conf import settings

COLUMNS = ("external_id", "question", "similar_questions", "answer", "summary", "tags", "category", "language",
           "status")
ALIASES = {"id": "external_id", "similar_question": "similar_questions", "similar": "similar_questions",
           "相似问": "similar_questions", "相似问题": "similar_questions"}
FORMATS = ("csv", "xlsx", "json", "jsonl", "txt")
EXTENSIONS = {
    ".csv": "csv", ".tsv": "csv", ".xlsx": "xlsx", ".xlsm": "xlsx", ".json": "json", ".jsonl": "jsonl",
    ".ndjson": "jsonl", ".txt": "txt", ".text": "txt", ".md": "txt",
}

_SEPARATOR = re.compile(r"^\s*-{3,}\s*$")
_QUESTION_PREFIX = re.compile(r"^\s*(?:q|question|问|问题)\s*[:：]\s?", re.IGNORECASE)
_ANSWER_PREFIX = re.compile(r"^\s*(?:a|answer|答|回答|答案)\s*[:：]\s?", re.IGNORECASE)
_ESCAPED_BYTE = re.compile(r"[\udc80-\udcff]")
_NON_ASCII = re.compile(r"[^\x00-\x7f\udc80-\udcff]")


class ImportFileError(Exception):
    """The file as a whole cannot be imported; the message says why and what to do."""


@dataclass
class SourceRow:
    number: int  # as the person sees it: spreadsheet row (header = 1), JSONL line, text entry
    values: dict[str, Any]
    error: str = ""  # the row could not be read at all (e.g. a JSONL line that is not JSON)


@dataclass
class ParsedFile:
    file_format: str
    encoding: str
    number_label: str  # "row", "line" or "entry": how ``SourceRow.number`` is meant
    rows: list[SourceRow]
    warnings: list[str] = field(default_factory=list)


def check_file_size(size: int) -> None:
    """Raises ImportFileError for a file over KB_IMPORT_MAX_BYTES; uploads are checked before they are read."""
    if size > settings.KB_IMPORT_MAX_BYTES:
        raise ImportFileError(
            f"The file is {size:,} bytes; the limit is {settings.KB_IMPORT_MAX_BYTES:,} "
            "(KB_IMPORT_MAX_BYTES). Split it into smaller files."
        )


def read_file(*, content: bytes, filename: str = "", file_format: str = "auto") -> ParsedFile:
    """Decode and parse ``content``; raises ImportFileError when the file cannot be used."""
    check_file_size(len(content))
    file_format = detect_format(content=content, filename=filename) if file_format == "auto" else file_format
    if file_format not in FORMATS:
        raise ImportFileError(f"Unknown format {file_format!r}; use one of {', '.join(FORMATS)}.")
    if file_format == "xlsx":
        return _read_xlsx(content)
    text, encoding = decode_text(content)
    if file_format == "csv":
        parsed = _read_csv(text)
    elif file_format == "json":
        parsed = _read_json(text)
    elif file_format == "jsonl":
        parsed = _read_jsonl(text)
    else:
        parsed = _read_text(text)
    parsed.encoding = encoding
    return parsed


def detect_format(*, content: bytes, filename: str = "") -> str:
    suffix = PurePath(filename).suffix.lower()
    if suffix == ".xls" or content.startswith(b"\xd0\xcf\x11\xe0"):
        raise ImportFileError("Old Excel (.xls) files are not supported: save the sheet as .xlsx or CSV UTF-8.")
    if suffix in EXTENSIONS:
        return EXTENSIONS[suffix]
    if content.startswith(b"PK\x03\x04"):
        return "xlsx"
    head = content[:4096].lstrip(codecs.BOM_UTF8 + b" \t\r\n")
    if head.startswith(b"["):
        return "json"
    if head.startswith(b"{"):
        return "jsonl"
    first_line = head.split(b"\n", 1)[0].lower()
    if b"question" in first_line and (b"," in first_line or b"\t" in first_line):
        return "csv"
    return "txt"


def decode_text(raw: bytes) -> tuple[str, str]:
    """Decode UTF-8 (with or without BOM), UTF-16 with BOM, or GBK/GB18030 as Chinese Excel writes.

    GB18030 accepts most byte soups, so a UTF-8 file with a few damaged bytes would silently
    decode as mojibake; a file whose valid UTF-8 characters outnumber its invalid bytes is
    therefore reported as damaged UTF-8 instead of being retried as GB18030."""
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return raw.decode("utf-16"), "utf-16"
        except UnicodeDecodeError as error:
            raise _decode_error(raw, error, "UTF-16") from None
    if raw.startswith(codecs.BOM_UTF8):
        try:
            return raw[len(codecs.BOM_UTF8):].decode("utf-8"), "utf-8-sig"
        except UnicodeDecodeError as error:
            raise _decode_error(raw[len(codecs.BOM_UTF8):], error, "UTF-8") from None
    if b"\x00" in raw:
        raise ImportFileError("The file contains NUL bytes: it is a binary file, not CSV or text. "
                              "Choose the right format, or save it as CSV UTF-8.")
    try:
        return raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError as utf8_error:
        escaped = raw.decode("utf-8", errors="surrogateescape")
        if len(_NON_ASCII.findall(escaped)) > len(_ESCAPED_BYTE.findall(escaped)):
            raise _decode_error(raw, utf8_error, "UTF-8") from None
    try:
        return raw.decode("gbk"), "gbk"
    except UnicodeDecodeError:
        pass  # GB18030 is GBK plus four-byte sequences (rare characters, emoji)
    try:
        return raw.decode("gb18030"), "gb18030"
    except UnicodeDecodeError as error:
        raise _decode_error(raw, error, "UTF-8, GBK or GB18030") from None


def _decode_error(raw: bytes, error: UnicodeDecodeError, expected: str) -> ImportFileError:
    line = raw[: error.start].count(b"\n") + 1
    return ImportFileError(
        f"The file is not valid {expected} text: byte 0x{raw[error.start]:02X} on line {line} cannot be "
        "decoded. Save it as “CSV UTF-8” (or UTF-8 text) and import it again; nothing was imported."
    )


def canonical_column(name: Any) -> str:
    """``External ID`` → ``external_id``; ``id`` is an alias of ``external_id``."""
    key = re.sub(r"[\s\-]+", "_", str(name if name is not None else "").strip().lower())
    return ALIASES.get(key, key)


def is_blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip()) or value == []


def _check_row_count(count: int) -> None:
    if count > settings.KB_IMPORT_MAX_ROWS:
        raise ImportFileError(f"The file has more than {settings.KB_IMPORT_MAX_ROWS:,} entries "
                              "(KB_IMPORT_MAX_ROWS). Split it into smaller files.")


def _unknown_columns_error(unknown: dict[str, str]) -> ImportFileError:
    found = ", ".join(f"{name} ({where})" for name, where in unknown.items())
    return ImportFileError(
        f"Unknown columns with data: {found}. Known columns: {', '.join(COLUMNS)} (id = external_id). "
        "Rename or remove them; empty unknown columns are ignored. Nothing was imported."
    )


# --- spreadsheets (CSV, XLSX) ------------------------------------------------------------------


def _cell(value: Any) -> Any:
    """Spreadsheet cells as text: Excel stores 1001 as 1001.0 and dates as datetimes."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    return str(value)


def read_table(numbered_rows: Iterable[tuple[int, Sequence[Any]]], *, file_format: str) -> ParsedFile:
    """Header = first non-empty row; later rows become SourceRows keyed by canonical column."""
    rows = iter(numbered_rows)
    header: list[str] = []
    for _number, cells in rows:
        if any(not is_blank(cell) for cell in cells):
            header = [canonical_column(cell) for cell in cells]
            break
    if not header:
        raise ImportFileError("The file is empty: no header row with a `question` column was found.")
    seen: dict[str, int] = {}
    for index, name in enumerate(header):
        if name and name in seen:
            raise ImportFileError(f"Columns {seen[name] + 1} and {index + 1} are both `{name}`; keep one.")
        seen[name] = index
    if "question" not in seen:
        found = ", ".join(name for name in header if name) or "none"
        raise ImportFileError(
            f"The sheet has no `question` column (found: {found}). The first row must name the columns: "
            f"{', '.join(COLUMNS)}; only `question` is required. Nothing was imported."
        )
    known = {index: name for index, name in enumerate(header) if name in COLUMNS}
    unknown_names = {index: name or f"column {index + 1} (no header)"
                     for index, name in enumerate(header) if name not in COLUMNS}
    unknown_with_data: dict[str, str] = {}
    parsed = ParsedFile(file_format=file_format, encoding="", number_label="row", rows=[])
    for number, cells in rows:
        if all(is_blank(cell) for cell in cells):
            continue
        _check_row_count(len(parsed.rows) + 1)
        values = {name: _cell(cells[index]) if index < len(cells) else "" for index, name in known.items()}
        row = SourceRow(number=number, values={k: "" if v is None else v for k, v in values.items()})
        if len(cells) > len(header) and any(not is_blank(cell) for cell in cells[len(header):]):
            row.error = f"has {len(cells)} values but the header names {len(header)} columns"
        for index, name in unknown_names.items():
            if index < len(cells) and not is_blank(cells[index]):
                unknown_with_data.setdefault(name, f"first in row {number}")
        parsed.rows.append(row)
    if unknown_with_data:
        raise _unknown_columns_error(unknown_with_data)
    ignored = [name for name in unknown_names.values() if not name.startswith("column ")]
    if ignored:
        parsed.warnings.append(f"Ignored empty unknown columns: {', '.join(ignored)}.")
    return parsed


def _read_csv(text: str) -> ParsedFile:
    # The stdlib default (128 KiB per field) is below a long answer; the file size limit still applies.
    csv.field_size_limit(max(csv.field_size_limit(), settings.KB_IMPORT_MAX_BYTES))
    first_line = text.split("\n", 1)[0]
    delimiter = max(",\t;", key=first_line.count)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        return read_table(enumerate(reader, start=1), file_format="csv")
    except csv.Error as error:
        raise ImportFileError(f"Line {reader.line_num} is not valid CSV: {error}.") from None


def _read_xlsx(content: bytes) -> ParsedFile:
    import openpyxl  # imported here: only spreadsheet imports pay for it
    from openpyxl.utils.exceptions import InvalidFileException

    try:
        workbook = openpyxl.load_workbook(io.BytesIO(content), read_only=True, data_only=True)
    except (zipfile.BadZipFile, InvalidFileException, KeyError, OSError, ValueError) as error:
        raise ImportFileError(f"The file is not a readable .xlsx workbook ({error}).") from None
    try:
        sheet = workbook.active if workbook.active is not None else workbook.worksheets[0]
        # Read-only sheets yield every row from row 1 on, empty ones as (), so the numbers are Excel's.
        rows = enumerate(sheet.iter_rows(values_only=True), start=1)
        return read_table(rows, file_format="xlsx")
    finally:
        workbook.close()


# --- JSON and JSONL ---------------------------------------------------------------------------


def _read_objects(objects: Iterable[tuple[int, Any]], *, file_format: str, number_label: str) -> ParsedFile:
    parsed = ParsedFile(file_format=file_format, encoding="", number_label=number_label, rows=[])
    unknown_with_data: dict[str, str] = {}
    ignored: set[str] = set()
    for number, obj in objects:
        _check_row_count(len(parsed.rows) + 1)
        if isinstance(obj, _Unreadable):
            parsed.rows.append(SourceRow(number=number, values={}, error=obj.message))
            continue
        if not isinstance(obj, dict):
            parsed.rows.append(SourceRow(number=number, values={},
                                         error=f"is {type(obj).__name__}, expected an object"))
            continue
        row = SourceRow(number=number, values={})
        for key, value in obj.items():
            name = canonical_column(key)
            if name not in COLUMNS:
                if is_blank(value):
                    ignored.add(str(key))
                else:
                    unknown_with_data.setdefault(str(key), f"first in {number_label} {number}")
            elif name in row.values:
                row.error = f"gives `{name}` twice (as `id` and `external_id`?)"
            else:
                row.values[name] = "" if value is None else value
        parsed.rows.append(row)
    if unknown_with_data:
        raise _unknown_columns_error(unknown_with_data)
    if ignored:
        parsed.warnings.append(f"Ignored empty unknown keys: {', '.join(sorted(ignored))}.")
    return parsed


@dataclass
class _Unreadable:
    message: str


def _read_json(text: str) -> ParsedFile:
    if text.lstrip().startswith("{"):
        return _read_jsonl(text)  # a .json file holding one object per line
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ImportFileError(f"The file is not valid JSON: {error.msg} at line {error.lineno}, "
                              f"column {error.colno}.") from None
    except RecursionError:  # json's parser recurses per level of [ or {
        raise ImportFileError("The JSON is nested too deeply to hold FAQ entries.") from None
    if not isinstance(data, list):
        raise ImportFileError("The JSON file must hold an array of objects: [{\"question\": …}, …].")
    return _read_objects(enumerate(data, start=1), file_format="json", number_label="entry")


def _read_jsonl(text: str) -> ParsedFile:
    def objects() -> Iterable[tuple[int, Any]]:
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as error:
                yield number, _Unreadable(f"is not valid JSON ({error.msg} at column {error.colno})")
            except RecursionError:
                yield number, _Unreadable("is JSON nested too deeply to be an entry")

    return _read_objects(objects(), file_format="jsonl", number_label="line")


# --- plain text -------------------------------------------------------------------------------


def _read_text(text: str) -> ParsedFile:
    """Entries separated by `---` lines or blank lines; first line = question, the rest = answer.

    With `---` separators or `Q:`/`问:` prefixes, blank lines belong to the answer (paragraphs);
    a prefixed question line always starts a new entry. `A:`/`答:` ends a multi-line question."""
    lines = text.splitlines()
    prefixed = any(_QUESTION_PREFIX.match(line) for line in lines)
    blank_separates = not prefixed and not any(_SEPARATOR.match(line) for line in lines)
    blocks: list[list[str]] = [[]]
    for line in lines:
        if _SEPARATOR.match(line) or (blank_separates and not line.strip()):
            blocks.append([])
        elif prefixed and _QUESTION_PREFIX.match(line) and any(part.strip() for part in blocks[-1]):
            blocks.append([line])
        else:
            blocks[-1].append(line)
    parsed = ParsedFile(file_format="txt", encoding="", number_label="entry", rows=[])
    for block in blocks:
        if not any(line.strip() for line in block):
            continue
        _check_row_count(len(parsed.rows) + 1)
        parsed.rows.append(SourceRow(number=len(parsed.rows) + 1, values=_text_entry(block)))
    return parsed


def _text_entry(block: list[str]) -> dict[str, Any]:
    while not block[0].strip():
        block = block[1:]
    first = _QUESTION_PREFIX.sub("", block[0], count=1)
    answer_at = next((i for i, line in enumerate(block[1:], start=1) if _ANSWER_PREFIX.match(line)), None)
    if answer_at is None:
        question_lines, answer_lines = [first], block[1:]
    else:
        question_lines = [first, *block[1:answer_at]]
        answer_lines = [_ANSWER_PREFIX.sub("", block[answer_at], count=1), *block[answer_at + 1:]]
    return {"question": "\n".join(question_lines).strip(), "answer": "\n".join(answer_lines).strip()}
