"""Back office for knowledge managers. Every write goes through ``knowledge.services``."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import reversion
from celery import current_app
from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Count, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.defaultfilters import pluralize
from django.template.loader import render_to_string
from django.template.response import TemplateResponse
from django.urls import path, reverse
from reversion.models import Version
from reversion_compare.admin import CompareVersionAdmin
from reversion_compare.helpers import html_diff

from knowledge import services
from knowledge.admin_checks import RollbackGate
from knowledge.cases.changes import FaqChange
from knowledge.cases.selectors import regression_cases_active
from knowledge.cases.services import (
    regression_case_add,
    regression_case_clean,
    regression_case_retire,
    regression_case_update,
)
from knowledge.charts import evidence_rows, risk_coverage_svg
from knowledge.models import CaseCheck, CaseExpect, CaseSource, FaqEntry, FaqStatus, KnowledgeBase, RegressionCase
from knowledge.resources import FaqEntryImportExportMixin
from knowledge.selectors import knowledge_base_calibration_state, knowledge_base_embedding_status
from knowledge.text_diff import sentence_diff_html
from rerank.heartbeat import rerank_running


class FaqEntryForm(forms.ModelForm):
    # The version the editor loaded; saving against a newer one is a conflict, never an overwrite.
    version = forms.IntegerField(widget=forms.HiddenInput, required=False)
    tags = forms.CharField(required=False, help_text="Comma-separated.")
    similar_questions = forms.CharField(
        required=False, strip=False, widget=forms.Textarea(attrs={"rows": 5, "class": "vLargeTextField"}),
        help_text="Other ways customers ask this question, one per line (相似问).",
    )
    language = forms.ChoiceField(required=False, choices=[("", "—"), *services.LANGUAGE_CHOICES])
    publish_anyway = forms.BooleanField(
        required=False, label="Publish anyway",
        help_text="Save although the regression check finds cases this change breaks.")
    override_reason = forms.CharField(required=False, label="Reason", widget=forms.Textarea(attrs={"rows": 2}),
                                      help_text="Why it is published anyway; recorded on the revision.")
    # From the unanswered queue's "Create FAQ entry from this": kept as the new entry's regression case.
    case_question = forms.CharField(required=False, widget=forms.HiddenInput, strip=False)
    # A check queued in the background for this very change (large case sets): saved once it is done.
    case_check_id = forms.IntegerField(required=False, widget=forms.HiddenInput)
    # Set by the admin per request: who the check runs for; and the check clean() ran.
    editor: Any = None
    case_check: CaseCheck | None = None
    queued_check: CaseCheck | None = None

    class Meta:
        model = FaqEntry
        fields = ["kb", "external_id", "question", "similar_questions", "summary", "answer", "tags", "category",
                  "language", "status", "version"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.initial["tags"] = ", ".join(self.instance.tags)
            self.initial["similar_questions"] = "\n".join(self.instance.similar_questions)

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if self.instance.pk:
            # Row lock until the admin's request transaction ends (the change view runs in one): a
            # concurrent save waits here, then sees the new version and gets this error, with its text
            # still in the form. Without it both could pass this check and the loser's text be dropped.
            current = (FaqEntry.objects.select_for_update().filter(pk=self.instance.pk)
                       .values_list("version", flat=True).first())
            if cleaned.get("version") != current:
                raise ValidationError(
                    "Someone else saved this entry while you were editing it (you loaded version "
                    f"{cleaned.get('version')}, it is now at version {current}). Copy your changes, "
                    "reload the page and apply them again."
                )
        try:
            services.faq_entry_clean(data={field: cleaned.get(field) for field in services.EDITABLE_FIELDS})
        except ValidationError as error:
            for field, problems in error.message_dict.items():
                self.add_error(field if field in self.fields else None, problems)
        if not self.errors:
            self._check_cases(cleaned)
        return cleaned

    def change(self) -> FaqChange:
        data = {field: self.cleaned_data.get(field) for field in services.EDITABLE_FIELDS}
        if self.instance.pk:
            return FaqChange(op="update", kb_id=self.instance.kb_id, entry_ids=(self.instance.pk,),
                             expected_version=self.cleaned_data["version"], data=data,
                             comment="Edited in admin")
        return FaqChange(op="create", kb_id=self.cleaned_data["kb"].pk, data=data, comment="Created in admin")

    def _check_cases(self, cleaned: dict[str, Any]) -> None:
        """The regression check of this save, shown on the page; broken cases stop the save unless
        "publish anyway" is ticked with a reason."""
        # chat composes recall and the reranker; knowledge does not import it at load time.
        from chat.services.checks import CheckUnavailable, case_check_queue, faq_change_check

        kb = self.instance.kb if self.instance.pk else cleaned.get("kb")
        cases = regression_cases_active(kb=kb).count() if kb is not None else 0
        if kb is None or not cases:
            return
        anyway, reason = cleaned.get("publish_anyway"), (cleaned.get("override_reason") or "").strip()
        if anyway and not reason:
            self.add_error("override_reason", "Say why this is published although it breaks regression cases.")
            return
        if cases > settings.KB_CASES_BACKGROUND_AT:
            self._check_in_background(kb=kb, queue=case_check_queue, anyway=bool(anyway))
            return
        try:
            self.case_check = faq_change_check(kb=kb, change=self.change(), actor=self.editor)
        except CheckUnavailable as error:
            if not anyway:
                self.add_error(None, f"The regression cases could not be checked ({error}). Tick “Publish anyway” "
                                     "with a reason to save without the check.")
            return
        if self.case_check.broken and not anyway:
            self.add_error(None, f"This change breaks {self.case_check.broken} regression case(s): see the check "
                                 "below. Fix the entry, or tick “Publish anyway” and give a reason.")

    def _check_in_background(self, *, kb: KnowledgeBase, queue: Any, anyway: bool) -> None:
        """Large case sets: the check runs in a Celery task; this form keeps its id, and the save goes
        through once that check of this very change is done."""
        change = self.change()
        wanted = self.cleaned_data.get("case_check_id")
        check = CaseCheck.objects.filter(pk=wanted, kb=kb, change=change.as_dict()).first() if wanted else None
        if check is None or check.status == CaseCheck.Status.FAILED:
            check = queue(kb=kb, change=change, actor=self.editor)
            data: Any = self.data.copy()  # type: ignore[attr-defined]  # a QueryDict: re-rendered with the id
            data["case_check_id"] = str(check.pk)
            self.data = data
        if check.status != CaseCheck.Status.DONE:
            self.queued_check = check
            self.add_error(None, f"The regression check of {check.cases} cases runs in the background (below); "
                                 "save again once it is done.")
            return
        self.case_check = check
        if check.broken and not anyway:
            self.add_error(None, f"This change breaks {check.broken} regression case(s): see the check below. Fix "
                                 "the entry, or tick “Publish anyway” and give a reason.")

    def _post_clean(self) -> None:
        # The model instance is built by the service, not by ModelForm (tags arrive as text).
        pass


def _keep_check_note(described: str, entry: Any) -> Any:
    """django-reversion replaces a revision's comment with the admin's change message: keep the
    check's verdict (and any "published anyway" reason) the service added to it."""
    if services.CHECK_NOTE in described:
        reversion.set_comment(f"{entry.get_change_message()}{services.CHECK_NOTE}"
                              f"{described.split(services.CHECK_NOTE, 1)[1]}")
    return entry


class TagFilter(admin.SimpleListFilter):
    title = "tag"
    parameter_name = "tag"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        tags = FaqEntry.objects.order_by().values_list("tags", flat=True).distinct()[:2000]
        return [(tag, tag) for tag in sorted({tag for row in tags for tag in row})[:200]]

    def queryset(self, request: HttpRequest, queryset: QuerySet[FaqEntry]) -> QuerySet[FaqEntry]:
        return queryset.filter(tags__contains=[self.value()]) if self.value() else queryset


@admin.register(FaqEntry)
class FaqEntryAdmin(FaqEntryImportExportMixin, CompareVersionAdmin):
    form = FaqEntryForm
    # Readable at 1280 px: the question gets the width; who edited and when are on the entry's history.
    list_display = ("question", "kb", "status", "language", "updated_at")
    list_filter = ("kb", "status", "language", "category", TagFilter)
    search_fields = ("question", "similar_questions", "answer", "summary", "external_id")
    list_select_related = ("kb", "updated_by")
    show_full_result_count = False
    list_per_page = 50
    readonly_fields = ("created_by", "created_at", "updated_by", "updated_at")
    actions = ("publish", "archive")
    history_latest_first = True
    # The compare view shows what an editor changed, not bookkeeping (kb, created_by, embeddings, version).
    compare_fields = services.EDITABLE_FIELDS
    # Entries are archived, never deleted: there is nothing to recover.
    change_list_template = "admin/change_list.html"  # not reversion's, which offers to recover deletions
    compare_template = "admin/knowledge/faqentry/compare.html"

    class Media:
        css = {"all": ("knowledge/changelist.css",)}

    def compare_TextField(self, obj_compare: Any) -> str:  # the name reversion-compare looks up
        old, new = obj_compare.to_string()
        return sentence_diff_html(old, new)

    def get_readonly_fields(self, request: HttpRequest, obj: FaqEntry | None = None) -> tuple[str, ...]:
        return (*self.readonly_fields, "kb") if obj else self.readonly_fields

    def has_delete_permission(self, request: HttpRequest, obj: FaqEntry | None = None) -> bool:
        # Entries are archived, not deleted: every change is kept and can be rolled back.
        return False

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        form = super().get_form(request, obj, change=change, **kwargs)
        if obj is not None:
            form.base_fields["version"].initial = obj.version
        form.editor = request.user
        return form

    def save_model(self, request: HttpRequest, obj: FaqEntry, form: Any, change: bool) -> None:
        check: CaseCheck | None = getattr(form, "case_check", None)
        anyway = bool(form.cleaned_data.get("publish_anyway"))
        reason = (form.cleaned_data.get("override_reason") or "").strip()
        # The check ran in clean(); without one (no cases, or the check could not run) only an override is noted.
        with services.faq_revisions_checked(
                check_id=check.pk if check else None, broken=check.broken if check else 0,
                fixed=check.fixed if check else 0, forced=anyway and (check is None or check.broken > 0),
                reason=reason) if check or anyway else nullcontext():
            written = form.change().apply(actor=request.user)
        saved = FaqEntry.objects.get(pk=written[0])
        if not change and form.cleaned_data.get("case_question"):
            case = regression_case_clean(kb=saved.kb, question=form.cleaned_data["case_question"],
                                         expect=CaseExpect.ANSWER, entry_id=saved.pk)
            regression_case_add(kb=saved.kb, case=case, source=CaseSource.UNANSWERED_QUEUE,
                                source_ref="unanswered queue", created_by=request.user)
            messages.info(request, "The customers' question is kept as this entry's regression case.")
        if check is not None:
            messages.info(request, f"Regression check: {check.cases} case{pluralize(check.cases)}, "
                                   f"{check.fixed} fixed, {check.broken} broken"
                                   f"{' (published anyway)' if check.broken else ''}.")
        for field in saved._meta.concrete_fields:  # the admin logs and redirects with `obj`
            setattr(obj, field.attname, getattr(saved, field.attname))

    def log_change(self, request: HttpRequest, obj: Any, message: Any) -> Any:
        described = reversion.get_comment() if reversion.is_active() else ""
        return _keep_check_note(described, super().log_change(request, obj, message))

    def log_addition(self, request: HttpRequest, obj: Any, message: Any) -> Any:
        described = reversion.get_comment() if reversion.is_active() else ""
        return _keep_check_note(described, super().log_addition(request, obj, message))

    def get_fieldsets(self, request: HttpRequest, obj: FaqEntry | None = None) -> Any:
        fields = [name for name in self.get_fields(request, obj)
                  if name not in ("publish_anyway", "override_reason", "case_question", "case_check_id")]
        return [(None, {"fields": [*fields, "case_question", "case_check_id"]}),
                ("Regression check", {"fields": ["publish_anyway", "override_reason"],
                                      "description": "Every save is checked against the knowledge base's "
                                                     "regression cases first."})]

    def render_change_form(self, request: HttpRequest, context: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        from chat.services.checks import case_check_summary

        form = getattr(context.get("adminform"), "form", None)
        check = getattr(form, "case_check", None)
        context["case_check"] = case_check_summary(check) if check is not None else None
        queued = getattr(form, "queued_check", None)
        if queued is not None:
            context["queued_check_url"] = reverse("admin:knowledge_faqentry_case_check", args=[queued.pk])
        return super().render_change_form(request, context, *args, **kwargs)

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        pass  # no relations are edited here; the service already wrote everything

    def get_urls(self) -> list[Any]:
        urls = [path("case-check/<int:check_id>/", self.admin_site.admin_view(self.case_check_view),
                     name="knowledge_faqentry_case_check")]
        return urls + super().get_urls()

    def case_check_view(self, request: HttpRequest, check_id: int) -> HttpResponse:
        """A background check's progress (the page reloads itself until it is done), then its result."""
        from chat.services.checks import case_check_progress, case_check_summary

        if not self.has_change_permission(request):
            raise PermissionDenied
        check = get_object_or_404(CaseCheck.objects.select_related("kb"), pk=check_id)
        done = check.status in (CaseCheck.Status.DONE, CaseCheck.Status.FAILED)
        context = {**self.admin_site.each_context(request), "opts": self.opts, "check": check, "done": done,
                   "title": f"Regression check: {check.trigger}", "scored": case_check_progress(check=check),
                   "to_score": 2 * check.cases,
                   "case_check": case_check_summary(check) if check.status == CaseCheck.Status.DONE else None}
        return TemplateResponse(request, "admin/knowledge/faqentry/case_check.html", context)

    def revision_view(self, request: HttpRequest, object_id: str, version_id: str,
                      extra_context: dict[str, Any] | None = None) -> HttpResponse:
        """Roll back to a revision: show what changes and the regression check of it, then write it as a
        new revision. A rollback that breaks cases needs "publish anyway" and a reason, as a save does.

        Replaces django-reversion's revert, which would restore derived columns and the lock
        version along with the text."""
        entry = get_object_or_404(FaqEntry.objects.select_related("kb"), pk=unquote(object_id))
        if not self.has_change_permission(request, entry):
            raise PermissionDenied
        version = get_object_or_404(Version.objects.get_for_object(entry), pk=version_id)
        change = FaqChange(op="rollback", kb_id=entry.kb_id, entry_ids=(entry.pk,), version_id=version.pk)
        old = version.field_dict
        rows = [
            {"field": field, "diff": html_diff(str(getattr(entry, field) or ""), str(old.get(field) or ""))}
            for field in services.EDITABLE_FIELDS
            if getattr(entry, field) != old.get(field)
        ]
        gate = RollbackGate(request=request, kb=entry.kb, change=change)
        if rows and request.method == "POST" and gate.write():
            when = f"{version.revision.date_created:%Y-%m-%d %H:%M}"
            messages.success(request, f"Rolled back to the revision of {when}.{gate.verdict()}")
            return HttpResponseRedirect(reverse("admin:knowledge_faqentry_change", args=[entry.pk]))
        if rows and request.method != "POST":
            gate.preview()
        context = {**self.admin_site.each_context(request), "opts": self.opts, "original": entry,
                   "version": version, "rows": rows, "title": f"Roll back “{entry}”", **gate.context(),
                   **(extra_context or {})}
        return TemplateResponse(request, "admin/knowledge/faqentry/rollback.html", context)

    @admin.action(description="Publish selected entries")
    def publish(self, request: HttpRequest, queryset: QuerySet[FaqEntry]) -> None:
        self._set_status_checked(request, queryset, FaqStatus.PUBLISHED, "Published")

    @admin.action(description="Archive selected entries")
    def archive(self, request: HttpRequest, queryset: QuerySet[FaqEntry]) -> None:
        self._set_status_checked(request, queryset, FaqStatus.ARCHIVED, "Archived")

    def _set_status_checked(self, request: HttpRequest, queryset: QuerySet[FaqEntry], status: str, done: str) -> None:
        """Bulk status changes are checked per knowledge base; one that breaks cases is not written (an
        override, with its reason, is given entry by entry on the entry's page)."""
        from chat.services.checks import CasesBroken, CheckUnavailable, faq_change_write_checked

        by_kb: dict[int, list[int]] = {}
        for entry_id, kb_id in queryset.values_list("pk", "kb_id"):
            by_kb.setdefault(kb_id, []).append(entry_id)
        changed = 0
        for kb in KnowledgeBase.objects.filter(pk__in=by_kb):
            change = FaqChange(op="set_status", kb_id=kb.pk, entry_ids=tuple(by_kb[kb.pk]), status=status)
            try:
                written, _ = faq_change_write_checked(kb=kb, change=change, actor=request.user)
            except CasesBroken as broken:
                questions = "; ".join(row["question"][:60] for row in broken.check.results
                                      if row["outcome"] == "broken")
                messages.error(request, f"{kb.slug}: nothing changed, it would break {broken.check.broken} "
                                        f"regression case(s): {questions}. Change those entries one by one "
                                        "(“Publish anyway” with a reason) if it is intended.")
                continue
            except CheckUnavailable as error:
                messages.error(request, f"{kb.slug}: nothing changed, the regression cases could not be checked "
                                        f"({error}).")
                continue
            changed += len(written)
        messages.success(request, f"{done} {changed} entries.")


# Sent by name: the calibration runs in the chat app (it composes recall, the reranker and feedback),
# which depends on this one, not the other way round.
CALIBRATE_TASK = "chat.tasks.knowledge_base_calibrate_task"


@admin.register(KnowledgeBase)
class KnowledgeBaseAdmin(admin.ModelAdmin):
    list_display = ("slug", "name", "entry_count", "embed_model", "calibrated_threshold", "target_precision")
    list_select_related = ("calibration",)
    search_fields = ("slug", "name")
    readonly_fields = ("calibration_panel", "embed_model", "embed_dimensions", "pending_embed_model",
                       "embedding_progress", "content_generation", "created_at", "updated_at")
    fieldsets = (
        (None, {"fields": ("slug", "name", "description", "languages")}),
        ("Decisions", {"fields": ("calibration_panel", "target_precision", "target_confidence", "suggest_threshold")}),
        ("Retrieval", {"fields": ("rerank_instruction", "recall_k", "rerank_k", "top_n", "embed_model",
                                  "embed_dimensions", "pending_embed_model", "embedding_progress")}),
        ("Record", {"fields": ("content_generation", "created_at", "updated_at")}),
    )
    show_full_result_count = False

    def get_queryset(self, request: HttpRequest) -> QuerySet[KnowledgeBase]:
        return super().get_queryset(request).select_related("calibration").annotate(entry_count=Count("entries"))

    def get_urls(self) -> list[Any]:
        urls = [path("<path:object_id>/calibrate/", self.admin_site.admin_view(self.calibrate_view),
                     name="knowledge_knowledgebase_calibrate")]
        return urls + super().get_urls()

    def calibrate_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        kb = get_object_or_404(KnowledgeBase, pk=unquote(object_id))
        if request.method != "POST" or not self.has_change_permission(request, kb):
            raise PermissionDenied
        try:
            current_app.send_task(CALIBRATE_TASK, kwargs={"kb_id": kb.pk})
        except Exception:  # broker down: say so rather than pretend it was queued
            messages.error(request, "Could not queue the calibration: the task broker (Redis) is unreachable.")
        else:
            messages.success(request, f"Calibration of {kb.slug} queued: it asks the base's similar questions and "
                                      "reviewed feedback through the reranker. Reload this page to see the result.")
        return HttpResponseRedirect(reverse("admin:knowledge_knowledgebase_change", args=[kb.pk]))

    @admin.display(description="answers at")
    def calibrated_threshold(self, obj: KnowledgeBase) -> str:
        if obj.calibration is None:
            return "uncalibrated"
        def at(threshold: float | None) -> str:
            return "does not auto-answer" if threshold is None else f"≥ {threshold}"

        if obj.calibration.by_language:
            return " · ".join(f"{language} {at(fitted['answer_threshold'])}"
                              for language, fitted in obj.calibration.by_language.items())
        return at(obj.calibration.answer_threshold)

    @admin.display(description="calibration")
    def calibration_panel(self, obj: KnowledgeBase) -> str:
        if not obj.pk:
            return "Save the knowledge base first."
        state = knowledge_base_calibration_state(kb=obj, running=rerank_running())
        calibration = state.calibration
        context: dict[str, Any] = {
            "kb": obj, "state": state, "cal": calibration, "changed_percent": round(state.changed_share * 100),
        }
        if calibration is not None:
            context.update(
                confidence_percent=round(calibration.confidence * 100),
                coverage_percent=round(calibration.coverage * 100, 1),
                handoff_percent=round((calibration.summary.get("no_answer_handed_off") or 0) * 100),
                evidence=evidence_rows(calibration.evidence),
                chart=risk_coverage_svg(rows=calibration.risk_coverage, target=calibration.target_precision,
                                        threshold=calibration.answer_threshold))
        return render_to_string("admin/knowledge/knowledgebase/_calibration.html", context)

    @admin.display(description="entries", ordering="entry_count")
    def entry_count(self, obj: KnowledgeBase) -> int:
        return int(getattr(obj, "entry_count", 0))

    @admin.display(description="embedding progress")
    def embedding_progress(self, obj: KnowledgeBase) -> str:
        if not obj.pk:
            return "-"
        status = knowledge_base_embedding_status(kb=obj)
        return f"{status.embedded} of {status.entries} entries embedded with {status.model}"

    def save_model(self, request: HttpRequest, obj: KnowledgeBase, form: Any, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        created = services.knowledge_base_create(slug=obj.slug, name=obj.name, languages=obj.languages,
                                                 description=obj.description)
        fields = [f for f in form.changed_data if f not in {"slug", "name", "languages", "description"}]
        for field in fields:
            setattr(created, field, form.cleaned_data[field])
        created.save()
        obj.pk = created.pk


class RegressionCaseForm(forms.ModelForm):
    class Meta:
        model = RegressionCase
        fields = ["kb", "question", "expect", "entry", "note"]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        kb = self.instance.kb if self.instance.pk else cleaned.get("kb")
        if kb is not None:
            entry = cleaned.get("entry")
            try:
                self.case = regression_case_clean(kb=kb, question=cleaned.get("question") or "",
                                                  expect=cleaned.get("expect"), entry_id=entry.pk if entry else None,
                                                  note=cleaned.get("note") or "")
            except ValidationError as error:
                for field, problems in error.message_dict.items():
                    self.add_error(field if field in self.fields else None, problems)
        return cleaned

    def _post_clean(self) -> None:
        pass  # written by the case services, not by ModelForm


@admin.register(RegressionCase)
class RegressionCaseAdmin(admin.ModelAdmin):
    form = RegressionCaseForm
    list_display = ("question", "expect", "entry", "kb", "source", "occurrences", "created_by", "created_at")
    list_filter = ("kb", "expect", "source", ("retired_at", admin.EmptyFieldListFilter))
    search_fields = ("question", "note")
    list_select_related = ("kb", "entry", "created_by")
    raw_id_fields = ("entry",)
    readonly_fields = ("source", "source_ref", "occurrences", "created_by", "created_at", "retired_at")
    actions = ("retire",)
    show_full_result_count = False

    def get_readonly_fields(self, request: HttpRequest, obj: RegressionCase | None = None) -> tuple[str, ...]:
        return (*self.readonly_fields, "kb") if obj else self.readonly_fields

    def has_delete_permission(self, request: HttpRequest, obj: RegressionCase | None = None) -> bool:
        return False  # retired, not deleted: the checks that ran it keep naming it

    def save_model(self, request: HttpRequest, obj: RegressionCase, form: Any, change: bool) -> None:
        if change:
            saved = regression_case_update(case_id=obj.pk, changes=form.case)
        else:
            saved, _ = regression_case_add(kb=form.cleaned_data["kb"], case=form.case, source=CaseSource.ADMIN,
                                           created_by=request.user)
        obj.pk = saved.pk

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        pass

    @admin.action(description="Retire selected cases")
    def retire(self, request: HttpRequest, queryset: QuerySet[RegressionCase]) -> None:
        count = sum(regression_case_retire(kb=case.kb, case_id=case.pk) for case in queryset.select_related("kb"))
        messages.success(request, f"Retired {count} cases.")
