"""FAQ entries of one knowledge base: list, create, read, edit (optimistic lock), archive, history."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db.models import Q, QuerySet
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import exceptions, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from reversion.models import Version

from chat.services.checks import (
    CasesBroken,
    CheckUnavailable,
    case_check_summary,
    faq_change_check,
    faq_change_write_checked,
)
from kbservice.api.errors import error_body
from kbservice.api.schema import errors
from knowledge.apis.common import (
    MAX_ID,
    KnowledgeApi,
    Pagination,
    StrictInput,
    StrictIntegerField,
    TextField,
    actor,
    conflict_response,
    knowledge_base_or_404,
    paginated,
)
from knowledge.cases.changes import FaqChange
from knowledge.models import FaqEntry, FaqStatus, KnowledgeBase
from knowledge.services import (
    CATEGORY_CHARS,
    EDITABLE_FIELDS,
    EXTERNAL_ID_CHARS,
    LANGUAGE_CODES,
    MAX_SIMILAR_QUESTIONS,
    MAX_TAG_CHARS,
    FaqEntryConflict,
)

ORDERINGS = ("id", "-id", "created_at", "-created_at", "updated_at", "-updated_at")


class FaqEntryOutput(serializers.ModelSerializer):
    created_by = serializers.CharField(source="created_by.username", allow_null=True)
    updated_by = serializers.CharField(source="updated_by.username", allow_null=True)

    class Meta:
        model = FaqEntry
        fields = ["id", "external_id", "question", "similar_questions", "answer", "summary", "tags", "category",
                  "language", "status", "version", "created_by", "updated_by", "created_at", "updated_at"]
        read_only_fields = fields


class CheckedWriteInput(StrictInput):
    """Every write is checked against the knowledge base's regression cases first."""

    read_only_fields = frozenset(FaqEntryOutput.Meta.fields)

    force = serializers.BooleanField(required=False, default=False,
                                     help_text="Write even if the check finds broken cases (recorded on the revision).")
    reason = TextField(required=False, allow_blank=True, default="", limit=1000,
                       help_text="Why the write is forced; recorded on the revision.")


class FaqEntryFieldsInput(CheckedWriteInput):
    """Types and shape only: the content rules (lengths, control characters, blank question) are
    faq_entry_clean's, shared with the admin and imports."""

    external_id = TextField(required=False, allow_null=True, allow_blank=True, trim_whitespace=False,
                            limit=EXTERNAL_ID_CHARS)
    question = TextField(required=False, trim_whitespace=False, limit=settings.KB_MAX_QUESTION_CHARS)
    similar_questions = serializers.ListField(
        child=TextField(trim_whitespace=False, limit=settings.KB_MAX_QUESTION_CHARS), required=False,
        max_length=MAX_SIMILAR_QUESTIONS, help_text="Alternate phrasings of the question (相似问).",
    )
    answer = TextField(required=False, allow_blank=True, trim_whitespace=False, limit=settings.KB_MAX_ANSWER_CHARS)
    summary = TextField(required=False, allow_blank=True, trim_whitespace=False, limit=settings.KB_MAX_SUMMARY_CHARS)
    tags = serializers.ListField(child=TextField(trim_whitespace=False, limit=MAX_TAG_CHARS), required=False)
    category = TextField(required=False, allow_blank=True, trim_whitespace=False, limit=CATEGORY_CHARS)
    language = serializers.ChoiceField(choices=["", *sorted(LANGUAGE_CODES)], required=False)
    status = serializers.ChoiceField(choices=FaqStatus.choices, required=False)


class FaqEntryCreateInput(FaqEntryFieldsInput):
    question = TextField(trim_whitespace=False, limit=settings.KB_MAX_QUESTION_CHARS)


class FaqEntryUpdateInput(FaqEntryFieldsInput):
    version = StrictIntegerField(min_value=1, max_value=MAX_ID,
                                 help_text="The version you read; if the entry has changed since, you get 409.")


class FaqEntryFilter(serializers.Serializer):
    status = serializers.ChoiceField(choices=FaqStatus.choices, required=False)
    language = serializers.ChoiceField(choices=sorted(LANGUAGE_CODES), allow_blank=True, required=False,
                                       help_text="Empty: entries without a language.")
    category = serializers.CharField(required=False, max_length=200)
    tag = serializers.CharField(required=False, max_length=64)
    q = serializers.CharField(required=False, max_length=200, help_text="Text in the question, answer or summary.")
    ordering = serializers.ChoiceField(choices=ORDERINGS, required=False, default="id")


def _entries() -> QuerySet[FaqEntry]:
    # Responses name who created and edited; the tsvector is never shown.
    return FaqEntry.objects.select_related("created_by", "updated_by").defer("search_vector")


def faq_entry_list(
    *, kb: KnowledgeBase, status: str = "", language: str | None = None, category: str = "", tag: str = "", q: str = "",
    ordering: str = "id",
) -> QuerySet[FaqEntry]:
    entries = _entries().filter(kb=kb)
    if status:
        entries = entries.filter(status=status)
    if language is not None:
        entries = entries.filter(language=language)
    if category:
        entries = entries.filter(category=category)
    if tag:
        entries = entries.filter(tags__contains=[tag])
    if q:
        # Substring, not full-text: managers look for exact phrases, and Chinese has no word breaks.
        entries = entries.filter(Q(question__icontains=q) | Q(answer__icontains=q) | Q(summary__icontains=q))
    return entries.order_by(ordering, "id")


def faq_entry_or_404(*, kb: KnowledgeBase, entry_id: int) -> FaqEntry:
    """Entries of other knowledge bases are 404 too: their ids must not be probed from here."""
    entry = faq_entry_list(kb=kb).filter(pk=entry_id).first() if entry_id <= MAX_ID else None
    if entry is None:
        raise exceptions.NotFound("No such entry in this knowledge base.")
    return entry


def faq_entry_versions(*, entry: FaqEntry) -> QuerySet[Version]:
    return Version.objects.get_for_object(entry).select_related("revision__user", "revision__case_check") \
        .order_by("-pk")


class FaqTextOutput(serializers.Serializer):
    """The text of an FAQ entry, as revisions keep it and as answers quote it."""

    external_id = serializers.CharField(allow_null=True)
    question = serializers.CharField()
    similar_questions = serializers.ListField(child=serializers.CharField(), default=list)
    answer = serializers.CharField()
    summary = serializers.CharField()
    tags = serializers.ListField(child=serializers.CharField())
    category = serializers.CharField()
    language = serializers.CharField()


class RevisionValuesOutput(FaqTextOutput):
    status = serializers.CharField()


class RevisionCheckOutput(serializers.Serializer):
    check = serializers.IntegerField(source="check_run_id", allow_null=True)
    broken = serializers.IntegerField()
    fixed = serializers.IntegerField()
    forced = serializers.BooleanField()
    reason = serializers.CharField()


class RevisionOutput(serializers.Serializer):
    id = serializers.IntegerField(source="revision_id", help_text="Pass it to rollback.")
    date = serializers.DateTimeField(source="revision.date_created")
    user = serializers.CharField(source="revision.user.username", allow_null=True)
    comment = serializers.CharField(source="revision.comment")
    values = serializers.SerializerMethodField()
    check = serializers.SerializerMethodField(help_text="What the case check said about this change, if it ran.")

    @extend_schema_field(RevisionCheckOutput(allow_null=True))
    def get_check(self, version: Version) -> dict[str, Any] | None:
        found = getattr(version.revision, "case_check", None)
        return dict(RevisionCheckOutput(found).data) if found is not None else None

    @extend_schema_field(RevisionValuesOutput)
    def get_values(self, version: Version) -> dict[str, Any]:
        stored = version.field_dict
        return {field: stored[field] for field in EDITABLE_FIELDS if field in stored}


class RollbackInput(CheckedWriteInput):
    revision_id = StrictIntegerField(min_value=1, max_value=MAX_ID, help_text="An id from the revisions list.")


CHECKED = ("Every write is first checked against the knowledge base's regression cases (as the base would be "
           "after it). One that would break a case is refused with 409 `cases_broken`, the check in `details` "
           "(cases fixed, broken, unchanged, each with its answer and score before and after) and nothing "
           "written; send it again with `force: true` and a `reason` to write it anyway, recorded on the revision. "
           "503 `check_unavailable` when the cases cannot be scored (no rerank worker).")


def _check_unavailable(error: CheckUnavailable) -> Response:
    return Response(error_body("check_unavailable", f"The regression cases could not be checked: {error}"),
                    status=status.HTTP_503_SERVICE_UNAVAILABLE)


def _checked_write(request: Request, kb: KnowledgeBase, change: FaqChange,
                   options: dict[str, Any]) -> tuple[list[int], Response | None]:
    """Write ``change`` if the case check allows it: the entries written, or the refusal."""
    try:
        written, _ = faq_change_write_checked(kb=kb, change=change, actor=actor(request), force=options["force"],
                                              reason=options["reason"])
    except CasesBroken as broken:
        return [], Response(error_body("cases_broken", str(broken), case_check_summary(broken.check)),
                            status=status.HTTP_409_CONFLICT)
    except CheckUnavailable as error:
        return [], _check_unavailable(error)
    return written, None


def _options(fields: dict[str, Any]) -> dict[str, Any]:
    return {"force": fields.pop("force", False), "reason": fields.pop("reason", "")}


def _entry_body(entry_id: int) -> dict[str, Any]:
    # Re-read with the users joined: faq_entries_set_status returns no entry, and the other
    # services return rows whose users would each cost a query.
    return dict(FaqEntryOutput(_entries().get(pk=entry_id)).data)


class FaqEntryListApi(KnowledgeApi):
    pagination_class = Pagination

    @extend_schema(operation_id="kbs_entries_list", parameters=[FaqEntryFilter],
                   responses={200: FaqEntryOutput(many=True)}, tags=["knowledge"])
    def get(self, request: Request, slug: str) -> Response:
        kb = knowledge_base_or_404(request, slug)
        filters = FaqEntryFilter(data=request.query_params)
        filters.is_valid(raise_exception=True)
        return paginated(request=request, view=self, queryset=faq_entry_list(kb=kb, **filters.validated_data),
                         serializer_class=FaqEntryOutput)

    @extend_schema(operation_id="kbs_entries_create", request=FaqEntryCreateInput,
                   responses={201: FaqEntryOutput, **errors(409, 503)}, tags=["knowledge"], description=CHECKED)
    def post(self, request: Request, slug: str) -> Response:
        kb = knowledge_base_or_404(request, slug)
        data = FaqEntryCreateInput(data=request.data)
        data.is_valid(raise_exception=True)
        fields = dict(data.validated_data)
        options = _options(fields)
        written, refused = _checked_write(request, kb, FaqChange(op="create", kb_id=kb.pk, data=fields), options)
        return refused or Response(_entry_body(written[0]), status=status.HTTP_201_CREATED)


class FaqEntryDetailApi(KnowledgeApi):
    @extend_schema(operation_id="kbs_entries_retrieve", responses={200: FaqEntryOutput}, tags=["knowledge"])
    def get(self, request: Request, slug: str, entry_id: int) -> Response:
        entry = faq_entry_or_404(kb=knowledge_base_or_404(request, slug), entry_id=entry_id)
        return Response(FaqEntryOutput(entry).data)

    @extend_schema(operation_id="kbs_entries_update", request=FaqEntryUpdateInput,
                   responses={200: FaqEntryOutput, **errors(409, 503)}, tags=["knowledge"],
                   description="Send the `version` you read. If someone saved the entry since, nothing is "
                               "written and the answer is 409 `conflict` with `details.current_version`, "
                               "`details.current` (the entry as it now is) and `details.submitted` (your "
                               "fields), to merge and send again with the current version. " + CHECKED)
    def patch(self, request: Request, slug: str, entry_id: int) -> Response:
        entry = faq_entry_or_404(kb=knowledge_base_or_404(request, slug), entry_id=entry_id)
        data = FaqEntryUpdateInput(data=request.data)
        data.is_valid(raise_exception=True)
        fields = dict(data.validated_data)
        options = _options(fields)
        change = FaqChange(op="update", kb_id=entry.kb_id, entry_ids=(entry.pk,),
                           expected_version=fields.pop("version"), data=fields)
        try:
            _, refused = _checked_write(request, entry.kb, change, options)
        except FaqEntryConflict as conflict:
            # The losing edit goes back with the entry as it now is: the client merges rather than retypes.
            return conflict_response(conflict, current=_entry_body(entry.pk), submitted=fields)
        return refused or Response(_entry_body(entry.pk))

    @extend_schema(operation_id="kbs_entries_archive", request=None,
                   responses={200: FaqEntryOutput, **errors(409, 503)},
                   parameters=[CheckedWriteInput], tags=["knowledge"],
                   description="Archives the entry: entries are never deleted. `?force=true&reason=…` as for other "
                               "writes. " + CHECKED)
    def delete(self, request: Request, slug: str, entry_id: int) -> Response:
        entry = faq_entry_or_404(kb=knowledge_base_or_404(request, slug), entry_id=entry_id)
        options = CheckedWriteInput(data=request.query_params.dict())
        options.is_valid(raise_exception=True)
        change = FaqChange(op="set_status", kb_id=entry.kb_id, entry_ids=(entry.pk,), status=FaqStatus.ARCHIVED)
        _, refused = _checked_write(request, entry.kb, change, dict(options.validated_data))
        return refused or Response(_entry_body(entry.pk))


class FaqEntryRevisionsApi(KnowledgeApi):
    pagination_class = Pagination

    @extend_schema(operation_id="kbs_entries_revisions", responses={200: RevisionOutput(many=True)},
                   tags=["knowledge"])
    def get(self, request: Request, slug: str, entry_id: int) -> Response:
        entry = faq_entry_or_404(kb=knowledge_base_or_404(request, slug), entry_id=entry_id)
        return paginated(request=request, view=self, queryset=faq_entry_versions(entry=entry),
                         serializer_class=RevisionOutput)


class FaqEntryRollbackApi(KnowledgeApi):
    @extend_schema(operation_id="kbs_entries_rollback", request=RollbackInput,
                   responses={200: FaqEntryOutput, **errors(409, 503)}, tags=["knowledge"],
                   description="Restores an earlier revision's values as a new revision. " + CHECKED)
    def post(self, request: Request, slug: str, entry_id: int) -> Response:
        entry = faq_entry_or_404(kb=knowledge_base_or_404(request, slug), entry_id=entry_id)
        data = RollbackInput(data=request.data)
        data.is_valid(raise_exception=True)
        revision_id = data.validated_data["revision_id"]
        version = faq_entry_versions(entry=entry).filter(revision_id=revision_id).first()
        if version is None:  # another entry's (maybe another knowledge base's) revision reads as a missing one
            raise exceptions.NotFound("No such revision of this entry.")
        change = FaqChange(op="rollback", kb_id=entry.kb_id, entry_ids=(entry.pk,), version_id=version.pk)
        _, refused = _checked_write(request, entry.kb, change, dict(data.validated_data))
        return refused or Response(_entry_body(entry.pk))


class FaqEntryCheckApi(KnowledgeApi):
    @extend_schema(operation_id="kbs_entries_check", request=FaqEntryUpdateInput,
                   responses={200: OpenApiTypes.OBJECT, **errors(409, 503)}, tags=["knowledge"],
                   description="The case check of a PATCH with this body, without writing it: cases fixed, broken "
                               "and unchanged, each with its answer and score before and after.")
    def post(self, request: Request, slug: str, entry_id: int) -> Response:
        entry = faq_entry_or_404(kb=knowledge_base_or_404(request, slug), entry_id=entry_id)
        data = FaqEntryUpdateInput(data=request.data)
        data.is_valid(raise_exception=True)
        fields = dict(data.validated_data)
        _options(fields)
        change = FaqChange(op="update", kb_id=entry.kb_id, entry_ids=(entry.pk,),
                           expected_version=fields.pop("version"), data=fields)
        try:
            check = faq_change_check(kb=entry.kb, change=change, actor=actor(request))
        except CheckUnavailable as error:
            return _check_unavailable(error)
        return Response(case_check_summary(check))
