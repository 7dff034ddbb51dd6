"""django-import-export glue: the admin's import preview and confirm run the same reader, planner and
services as `kb_import`; only the presentation is django-import-export's.

Use ``FaqEntryImportExportMixin`` in the FaqEntry admin: it brings the resource, the file formats
(raw bytes, so GBK is detected like on the CLI), and a knowledge-base field on the import form."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import tablib
from django import forms
from django.contrib import messages
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from import_export import resources
from import_export.admin import ImportExportMixin
from import_export.formats.base_formats import Format
from import_export.forms import ConfirmImportForm, ImportForm
from import_export.results import Error, Result, RowResult

from knowledge.cases.selectors import regression_cases_active
from knowledge.exporting import CONTENT_TYPES, export_cell_text, faq_entry_export_row, faq_rows_render
from knowledge.importing import (
    COLUMNS,
    Checker,
    ImportFileError,
    ImportReport,
    ParsedFile,
    RowAction,
    RowReport,
    faq_entries_import_parsed,
    read_file,
)
from knowledge.importing.reading import check_file_size, read_table
from knowledge.models import FaqEntry, KnowledgeBase


class ParsedDataset(tablib.Dataset):
    """A Dataset that keeps what the reader found: file row numbers, encoding, warnings."""

    def __init__(self, parsed: ParsedFile) -> None:
        super().__init__(headers=list(COLUMNS))
        self.parsed = parsed
        for row in parsed.rows:
            self.append([row.values.get(column, "") for column in COLUMNS])


class FaqFileFormat(Format):
    """One of the importer's formats, read from raw bytes (the reader detects UTF-8/GBK itself)."""

    name: ClassVar[str] = ""

    def __init__(self, encoding: str | None = None) -> None:
        self.encoding = encoding  # django-import-export passes one; detection makes it moot

    def get_title(self) -> str:
        return self.name  # the admin's script picks the format whose title is the file's extension

    def get_extension(self) -> str:
        return self.name

    def get_content_type(self) -> str:
        return CONTENT_TYPES[self.name]

    def is_binary(self) -> bool:
        return True

    def get_read_mode(self) -> str:
        return "rb"

    def can_import(self) -> bool:
        return True

    def can_export(self) -> bool:
        return True

    def create_dataset(self, in_stream: bytes | str) -> ParsedDataset:
        content = in_stream.encode() if isinstance(in_stream, str) else in_stream
        return ParsedDataset(read_file(content=content, file_format=self.name))

    def export_data(self, dataset: tablib.Dataset, **kwargs: Any) -> bytes:
        return faq_rows_render(rows=dataset.dict, file_format=self.name, columns=list(dataset.headers or COLUMNS))


class CsvFormat(FaqFileFormat):
    name = "csv"


class XlsxFormat(FaqFileFormat):
    name = "xlsx"


class JsonFormat(FaqFileFormat):
    name = "json"


class JsonlFormat(FaqFileFormat):
    name = "jsonl"


class TextFormat(FaqFileFormat):
    name = "txt"


FORMATS: list[type[FaqFileFormat]] = [CsvFormat, XlsxFormat, JsonFormat, JsonlFormat, TextFormat]

_ROW_TYPES = {RowAction.CREATE: RowResult.IMPORT_TYPE_NEW, RowAction.UPDATE: RowResult.IMPORT_TYPE_UPDATE,
              RowAction.SKIP: RowResult.IMPORT_TYPE_SKIP}


class FaqEntryResource(resources.ModelResource):
    """Import goes through ``knowledge.importing`` (never ``save()``), so revisions, locking,
    indexing and embedding are the services' as everywhere else."""

    class Meta:
        model = FaqEntry
        fields = COLUMNS
        export_order = COLUMNS
        import_id_fields = ("external_id",)

    report: ImportReport | None = None

    def import_data(  # type: ignore[override]
        self, dataset: tablib.Dataset, dry_run: bool = False, raise_errors: bool = False,
        use_transactions: bool | None = None, collect_failed_rows: bool = False,
        rollback_on_validation_errors: bool = False, **kwargs: Any,
    ) -> Result:
        result = self.get_result_class()()
        kb = kwargs.get("kb") or _only_knowledge_base()
        try:
            if kb is None:
                raise ImportFileError("Choose the knowledge base to import into.")
            parsed = dataset.parsed if isinstance(dataset, ParsedDataset) else _parse_dataset(dataset)
        except ImportFileError as error:
            result.append_base_error(self.get_error_result_class()(error))
            return result
        user = kwargs.get("user")
        try:
            self.report = report = faq_entries_import_parsed(
                kb=kb, parsed=parsed, source=kwargs.get("file_name") or "upload", dry_run=dry_run,
                default_language=kwargs.get("default_language") or "", user=user,
                checker=_case_checker(kb=kb, user=user), force=bool(kwargs.get("publish_anyway")),
                reason=kwargs.get("override_reason") or "",
            )
        except ImportFileError as error:  # the regression cases could not be checked: nothing was written
            result.append_base_error(self.get_error_result_class()(error))
            return result
        result.case_check = report.check  # shown on the preview (import.html)
        request = kwargs.get("request")
        if request is not None:
            for warning in report.warnings:
                messages.warning(request, warning)
        _fill_result(result, report)
        if raise_errors and not report.ok:
            raise ImportFileError("; ".join(report.errors) or report.summary())
        return result

    def export(self, queryset: QuerySet[FaqEntry] | None = None, **kwargs: Any) -> tablib.Dataset:
        selected = kwargs.get("export_fields")
        columns = [column for column in COLUMNS if not selected or column in selected]
        queryset = self.filter_export(queryset if queryset is not None else self.get_queryset(), **kwargs)
        dataset = tablib.Dataset(headers=columns)
        for entry in self.iter_queryset(queryset):
            row = faq_entry_export_row(entry=entry)
            # Lists as text ("a, b"; a phrasing per line) so django-import-export's own formats can write them.
            dataset.append([export_cell_text(c, row[c]) or "" for c in columns])
        return dataset


def _case_checker(*, kb: KnowledgeBase, user: Any) -> Checker | None:
    """The regression check of the import's rows (preview and confirm alike); None without cases."""
    # chat composes recall and the reranker; knowledge does not import it at load time.
    from chat.services.checks import CheckUnavailable, case_check_summary, faq_change_check

    if not regression_cases_active(kb=kb).exists():
        return None
    actor = user if user is not None and user.is_authenticated else None

    def check(write: Callable[[], list[int]]) -> dict[str, Any]:
        try:
            return case_check_summary(faq_change_check(kb=kb, apply=write, trigger="admin import", actor=actor))
        except CheckUnavailable as error:
            raise ImportFileError(f"The regression cases could not be checked ({error}); nothing was imported. "
                                  "Try again once the rerank worker runs.") from error

    return check


def _only_knowledge_base() -> KnowledgeBase | None:
    candidates = list(KnowledgeBase.objects.all()[:2])
    return candidates[0] if len(candidates) == 1 else None


def _parse_dataset(dataset: tablib.Dataset) -> ParsedFile:
    """A Dataset from one of django-import-export's own formats: header = row 1, as in the file."""
    rows = [list(dataset.headers or []), *(list(row) for row in dataset)]
    return read_table(enumerate(rows, start=1), file_format="table")


def _errors_by_field(errors: list[str]) -> dict[str, list[str]]:
    by_field: dict[str, list[str]] = {}
    for error in errors:
        name, separator, message = error.partition(": ")
        if separator and name in COLUMNS:
            by_field.setdefault(name, []).append(message)
        else:
            by_field.setdefault(NON_FIELD_ERRORS, []).append(error)
    return by_field


def _notes(row: RowReport) -> str:
    notes = list(row.warnings)
    if row.action in (RowAction.UPDATE, RowAction.SKIP):
        changed = f": {', '.join(row.changed_fields)}" if row.changed_fields else ""
        notes.insert(0, f"entry #{row.entry_id}, matched by {row.matched_by}{changed}")
    return "; ".join(notes)


def _fill_result(result: Result, report: ImportReport) -> None:
    label = report.number_label.capitalize()
    result.diff_headers = [label, "external_id", "question", "notes"]
    result.total_rows = len(report.rows)
    for message in report.errors:
        result.append_base_error(Error(ImportFileError(message)))
    for row in report.error_rows:
        values = {label: row.number, "external_id": row.external_id or "", "question": row.question, "notes": ""}
        result.append_invalid_row(row.number, values, ValidationError(_errors_by_field(row.errors)))
        result.totals[RowResult.IMPORT_TYPE_INVALID] += 1
    if not report.ok or not (report.dry_run or report.written):
        return  # nothing was or would be written: only the problems are shown
    entries = FaqEntry.objects.in_bulk([row.entry_id for row in report.rows if row.entry_id]) if report.written else {}
    for row in report.rows:
        row_result = RowResult()
        row_result.import_type = _ROW_TYPES[row.action]
        row_result.diff = [row.number, row.external_id or "", row.question, _notes(row)]
        if row.entry_id in entries:
            row_result.instance = entries[row.entry_id]  # the admin's LogEntry needs the saved instance
            row_result.add_instance_info(row_result.instance)
        result.increment_row_result_total(row_result)
        result.append_row_result(row_result)


class FaqImportForm(ImportForm):
    kb = forms.ModelChoiceField(queryset=KnowledgeBase.objects.all(), label="Knowledge base")
    language = forms.ChoiceField(required=False, choices=[("", "—"), ("zh", "zh"), ("en", "en")],
                                 help_text="Filled in for rows that name no language.")
    field_order = ["resource", "kb", "import_file", "format", "language"]

    def clean_import_file(self) -> Any:
        # Refused here, before django-import-export copies the upload to its temporary storage.
        upload = self.cleaned_data["import_file"]
        try:
            check_file_size(upload.size)
        except ImportFileError as error:
            raise ValidationError(str(error)) from None
        return upload


class FaqConfirmImportForm(ConfirmImportForm):
    kb = forms.ModelChoiceField(queryset=KnowledgeBase.objects.all(), widget=forms.HiddenInput)
    language = forms.CharField(required=False, widget=forms.HiddenInput)
    # Shown when the preview's check breaks cases; the confirm checks again and refuses without both.
    publish_anyway = forms.BooleanField(required=False, initial=False, label="Publish anyway",
                                        help_text="Import although the regression check finds cases it breaks.")
    override_reason = forms.CharField(required=False, initial="", label="Reason",
                                      widget=forms.Textarea(attrs={"rows": 2}),
                                      help_text="Why it is published anyway; recorded on the revisions.")


class FaqEntryImportExportMixin(ImportExportMixin):
    """ImportExportMixin wired to ``FaqEntryResource``: preview (dry run) then confirm."""

    resource_classes = [FaqEntryResource]
    import_form_class = FaqImportForm
    confirm_form_class = FaqConfirmImportForm
    import_formats = FORMATS
    export_formats = FORMATS
    import_template_name = "admin/knowledge/faqentry/import.html"  # the preview shows the regression check

    def has_import_permission(self, request: HttpRequest) -> bool:
        # An import adds and changes entries: it needs both rights, not just access to the admin.
        return bool(self.has_add_permission(request) and self.has_change_permission(request))

    def has_export_permission(self, request: HttpRequest) -> bool:
        return bool(self.has_view_permission(request))

    def get_confirm_form_initial(self, request: HttpRequest, import_form: Any) -> dict[str, Any]:
        initial: dict[str, Any] = super().get_confirm_form_initial(request, import_form)
        if import_form is not None:
            initial["kb"] = import_form.cleaned_data["kb"].pk
            initial["language"] = import_form.cleaned_data.get("language") or ""
        return initial

    def get_import_data_kwargs(self, **kwargs: Any) -> dict[str, Any]:
        form = kwargs.get("form")
        cleaned = getattr(form, "cleaned_data", None) or {}
        if cleaned.get("kb") is not None:
            kwargs["kb"] = cleaned["kb"]
            kwargs["default_language"] = cleaned.get("language") or ""
        kwargs["publish_anyway"] = bool(cleaned.get("publish_anyway"))
        kwargs["override_reason"] = (cleaned.get("override_reason") or "").strip()
        result: dict[str, Any] = super().get_import_data_kwargs(**kwargs)
        return result

    def add_data_read_fail_error_to_form(self, form: Any, e: Exception) -> None:
        if isinstance(e, ImportFileError):
            form.add_error("import_file", str(e))  # our messages say what to do; the default names the class
        else:
            super().add_data_read_fail_error_to_form(form, e)

    def process_result(self, result: Result, request: HttpRequest) -> HttpResponse:
        if result.has_errors() or result.has_validation_errors():
            # The entries changed between preview and confirm: nothing was written, say why.
            for error in result.base_errors:
                messages.error(request, str(error.error))
            if result.invalid_rows:
                messages.error(request, f"{len(result.invalid_rows)} rows have errors; nothing was imported.")
            url = reverse("admin:{}_{}_import".format(*self.get_model_info()), current_app=self.admin_site.name)
            return HttpResponseRedirect(url)
        response: HttpResponse = super().process_result(result, request)
        return response
