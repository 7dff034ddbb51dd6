"""Knowledge bases: list, create, read, tune, and their statistics."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.apps import apps
from django.db import IntegrityError, transaction
from django.db.models import Count, F
from django.utils import timezone
from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import exceptions, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from knowledge.apis.common import (
    KnowledgeApi,
    Pagination,
    StrictFloatField,
    StrictInput,
    StrictIntegerField,
    TextField,
    knowledge_base_or_404,
    knowledge_bases_visible,
    no_control_characters,
    paginated,
    request_key,
)
from knowledge.models import FaqEntry, FaqStatus, KnowledgeBase
from knowledge.selectors import knowledge_base_embedding_status
from knowledge.services import LANGUAGE_CODES, knowledge_base_create

ASK_WINDOW = timedelta(days=7)
# Settings that change which answer an ask gets. The answer-cache key names some of them but not
# recall_k or rerank_k, so a change bumps content_generation, which every cache key contains.
ANSWER_SETTINGS = frozenset({"rerank_instruction", "suggest_threshold", "recall_k", "rerank_k", "top_n"})
MAX_RECALL_K = 1000
MAX_RERANK_K = 200
MAX_TOP_N = 20


class KnowledgeBaseOutput(serializers.ModelSerializer):
    answer_threshold = serializers.SerializerMethodField(
        help_text="Set by kb_calibrate, never by hand: the current calibration's answer threshold; null when the "
                  "base is uncalibrated or nothing could be certified (it then never auto-answers). With "
                  "evidence in several languages, the pooled one: each language decides by its own "
                  "(answer_thresholds_by_language).")
    answer_thresholds_by_language = serializers.SerializerMethodField(
        help_text="When the calibration was fitted per language: each language's answer threshold (null: that "
                  "language is not auto-answered); a language not listed is not auto-answered. Empty otherwise.")

    class Meta:
        model = KnowledgeBase
        fields = ["slug", "name", "description", "languages", "embed_model", "embed_dimensions",
                  "pending_embed_model", "rerank_instruction", "answer_threshold", "answer_thresholds_by_language",
                  "suggest_threshold", "target_precision", "target_confidence", "recall_k", "rerank_k", "top_n",
                  "content_generation", "created_at", "updated_at"]
        read_only_fields = fields

    def get_answer_threshold(self, kb: KnowledgeBase) -> float | None:
        return kb.calibration.answer_threshold if kb.calibration is not None else None

    def get_answer_thresholds_by_language(self, kb: KnowledgeBase) -> dict[str, float | None]:
        if kb.calibration is None:
            return {}
        return {language: fitted["answer_threshold"] for language, fitted in kb.calibration.by_language.items()}


# A pattern, not an enum: drf-spectacular names enums after their property, and this one would be a
# second name for the entries' `language` enum (same values).
@extend_schema_field({"type": "array", "maxItems": len(LANGUAGE_CODES),
                      "items": {"type": "string", "pattern": f"^({'|'.join(sorted(LANGUAGE_CODES))})$"}})
class LanguagesField(serializers.ListField):
    child = serializers.ChoiceField(choices=sorted(LANGUAGE_CODES))


def _languages_field() -> serializers.ListField:
    return LanguagesField(required=False, max_length=len(LANGUAGE_CODES))


def _dedupe(values: list[str]) -> list[str]:
    return list(dict.fromkeys(values))


class KnowledgeBaseCreateInput(StrictInput):
    read_only_fields = frozenset(KnowledgeBaseOutput.Meta.fields)

    slug = serializers.SlugField(max_length=64)
    name = TextField(required=False, allow_blank=True, max_length=200, validators=[no_control_characters])
    description = TextField(required=False, allow_blank=True, max_length=10_000)
    languages = _languages_field()

    def validate_slug(self, value: str) -> str:
        if KnowledgeBase.objects.filter(slug=value).exists():
            raise serializers.ValidationError("A knowledge base with this slug already exists.")
        return value

    def validate_languages(self, value: list[str]) -> list[str]:
        return _dedupe(value)


class KnowledgeBaseUpdateInput(StrictInput):
    read_only_fields = frozenset(KnowledgeBaseOutput.Meta.fields)

    name = TextField(required=False, max_length=200, validators=[no_control_characters])
    description = TextField(required=False, allow_blank=True, max_length=10_000)
    languages = _languages_field()
    rerank_instruction = TextField(required=False, max_length=2000, validators=[no_control_characters],
                                   help_text="Instruction given to the reranker, in English.")
    suggest_threshold = StrictFloatField(required=False, min_value=0.0, max_value=1.0,
                                         help_text="Until the base is calibrated: below this top score, hand off.")
    target_precision = StrictFloatField(required=False, min_value=0.5, max_value=0.999,
                                        help_text="Precision of auto-answers the next calibration must certify.")
    target_confidence = StrictFloatField(required=False, min_value=0.5, max_value=0.999,
                                         help_text="Confidence of that guarantee.")
    recall_k = StrictIntegerField(required=False, min_value=1, max_value=MAX_RECALL_K)
    rerank_k = StrictIntegerField(required=False, min_value=1, max_value=MAX_RERANK_K, help_text="At most recall_k.")
    top_n = StrictIntegerField(required=False, min_value=1, max_value=MAX_TOP_N, help_text="At most rerank_k.")

    def validate_languages(self, value: list[str]) -> list[str]:
        return _dedupe(value)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        attrs = super().validate(attrs)
        kb: KnowledgeBase = self.context["kb"]
        merged = {field: attrs.get(field, getattr(kb, field)) for field in ANSWER_SETTINGS}
        errors: dict[str, list[str]] = {}
        if merged["rerank_k"] > merged["recall_k"]:
            errors["rerank_k"] = [f"must be at most recall_k ({merged['recall_k']})"]
        if merged["top_n"] > merged["rerank_k"]:
            errors["top_n"] = [f"must be at most rerank_k ({merged['rerank_k']})"]
        if errors:
            raise serializers.ValidationError(errors)
        return attrs


@transaction.atomic
def knowledge_base_update(*, kb_id: int, data: dict[str, Any]) -> KnowledgeBase:
    """Apply validated settings under a row lock, so two concurrent edits cannot interleave."""
    kb = KnowledgeBase.objects.select_for_update().get(pk=kb_id)
    changed = {field: value for field, value in data.items() if getattr(kb, field) != value}
    if not changed:
        return kb
    for field, value in changed.items():
        setattr(kb, field, value)
    kb.full_clean()
    if changed.keys() & ANSWER_SETTINGS:
        kb.content_generation = F("content_generation") + 1
    kb.save()
    kb.refresh_from_db()
    return kb


def knowledge_base_entry_counts(*, kb: KnowledgeBase) -> dict[str, dict[str, int]]:
    entries = FaqEntry.objects.filter(kb=kb).order_by()  # no default ordering in the GROUP BY
    by_status = {value: 0 for value in FaqStatus.values}
    by_status.update(entries.values_list("status").annotate(n=Count("id")))
    by_language = dict(entries.values_list("language").annotate(n=Count("id")))
    return {"by_status": by_status, "by_language": dict(sorted(by_language.items()))}


def knowledge_base_asks(*, kb: KnowledgeBase, since: timedelta = ASK_WINDOW) -> dict[str, Any] | None:
    """Asks by decision in the window, or None where the chat app is not installed."""
    if not apps.is_installed("chat"):
        return None
    from chat.models import AskLog, Decision

    rows = (AskLog.objects.filter(kb=kb, created_at__gte=timezone.now() - since).order_by()
            .values_list("decision").annotate(n=Count("id")))
    by_decision = {value: 0 for value in Decision.values}
    by_decision.update(rows)
    return {"days": since.days, "total": sum(by_decision.values()), "by_decision": by_decision}


class EmbeddingStatusOutput(serializers.Serializer):
    model = serializers.CharField()
    entries = serializers.IntegerField()
    embedded = serializers.IntegerField()
    complete = serializers.BooleanField()


class EntryCountsOutput(serializers.Serializer):
    total = serializers.IntegerField()
    by_status = serializers.DictField(child=serializers.IntegerField())
    by_language = serializers.DictField(child=serializers.IntegerField(), help_text="'' = language not set.")


class AsksOutput(serializers.Serializer):
    days = serializers.IntegerField()
    total = serializers.IntegerField()
    by_decision = serializers.DictField(child=serializers.IntegerField())


class KnowledgeBaseStatsOutput(serializers.Serializer):
    slug = serializers.CharField()
    content_generation = serializers.IntegerField()
    entries = EntryCountsOutput()
    embedding = EmbeddingStatusOutput()
    pending_embedding = EmbeddingStatusOutput(allow_null=True, help_text="Progress of a re-embed, if one runs.")
    asks = AsksOutput(allow_null=True, help_text="Asks in the last days by decision; null without the chat app.")


def _embedding(kb: KnowledgeBase, model: str | None = None) -> dict[str, Any]:
    embedding = knowledge_base_embedding_status(kb=kb, model=model)
    return {"model": embedding.model, "entries": embedding.entries, "embedded": embedding.embedded,
            "complete": embedding.complete}


class KnowledgeBaseListApi(KnowledgeApi):
    pagination_class = Pagination

    @extend_schema(operation_id="kbs_list", responses={200: KnowledgeBaseOutput(many=True)}, tags=["knowledge"])
    def get(self, request: Request) -> Response:
        return paginated(request=request, view=self, queryset=knowledge_bases_visible(request).order_by("slug"),
                         serializer_class=KnowledgeBaseOutput)

    @extend_schema(operation_id="kbs_create", request=KnowledgeBaseCreateInput,
                   responses={201: KnowledgeBaseOutput}, tags=["knowledge"])
    def post(self, request: Request) -> Response:
        key = request_key(request)
        if key is not None and key.kb_id is not None:
            raise exceptions.PermissionDenied("This key is bound to one knowledge base; it cannot create others.")
        data = KnowledgeBaseCreateInput(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            with transaction.atomic():  # a savepoint, so losing a race on the slug leaves the request usable
                kb = knowledge_base_create(**data.validated_data)
        except IntegrityError as error:
            raise serializers.ValidationError(
                {"slug": ["A knowledge base with this slug already exists."]}) from error
        return Response(KnowledgeBaseOutput(kb).data, status=status.HTTP_201_CREATED)


class KnowledgeBaseDetailApi(KnowledgeApi):
    @extend_schema(operation_id="kbs_retrieve", responses={200: KnowledgeBaseOutput}, tags=["knowledge"])
    def get(self, request: Request, slug: str) -> Response:
        return Response(KnowledgeBaseOutput(knowledge_base_or_404(request, slug)).data)

    @extend_schema(operation_id="kbs_update", request=KnowledgeBaseUpdateInput,
                   responses={200: KnowledgeBaseOutput}, tags=["knowledge"])
    def patch(self, request: Request, slug: str) -> Response:
        kb = knowledge_base_or_404(request, slug)
        data = KnowledgeBaseUpdateInput(data=request.data, context={"kb": kb})
        data.is_valid(raise_exception=True)
        kb = knowledge_base_update(kb_id=kb.pk, data=data.validated_data)
        return Response(KnowledgeBaseOutput(kb).data)


class KnowledgeBaseStatsApi(KnowledgeApi):
    @extend_schema(operation_id="kbs_stats", responses={200: KnowledgeBaseStatsOutput}, tags=["knowledge"])
    def get(self, request: Request, slug: str) -> Response:
        kb = knowledge_base_or_404(request, slug)
        counts = knowledge_base_entry_counts(kb=kb)
        body = {
            "slug": kb.slug,
            "content_generation": kb.content_generation,
            "entries": {"total": sum(counts["by_status"].values()), **counts},
            "embedding": _embedding(kb),
            "pending_embedding": _embedding(kb, kb.pending_embed_model) if kb.pending_embed_model else None,
            "asks": knowledge_base_asks(kb=kb),
        }
        return Response(KnowledgeBaseStatsOutput(body).data)
