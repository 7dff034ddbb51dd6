"""Plumbing shared by the knowledge API views: access, errors, body limits, pagination, strict fields."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.contrib.auth.models import User
from django.core.exceptions import NON_FIELD_ERRORS, ObjectDoesNotExist
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import QuerySet
from rest_framework import exceptions, permissions, serializers, status
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import APIView

from chat.models import ApiKey, Scope
from kbservice.api.auth import requires_scope
from kbservice.api.errors import error_body
from knowledge import text as kb_text
from knowledge.models import KnowledgeBase
from knowledge.services import FaqEntryConflict

# Bounds for integers that reach a bigint column or lookup: larger values would be a database error.
MAX_ID = 2**63 - 1


class SecretKeyOrStaff(permissions.BasePermission):
    """Publishable keys live in web pages, so they never write, whatever scopes they carry;
    sessions must belong to staff (the group then decides the scope)."""

    message = "Only secret API keys and staff sessions may manage knowledge bases."

    def has_permission(self, request: Request, view: APIView) -> bool:
        if isinstance(request.auth, ApiKey):
            return request.auth.kind == ApiKey.Kind.SECRET
        return bool(getattr(request.user, "is_staff", False) or getattr(request.user, "is_superuser", False))


class Pagination(LimitOffsetPagination):
    """The project's limit/offset pages, with a ceiling so one request cannot ask for every row.
    An offset past any table's end is an empty page, even one past Postgres' bigint (not a 500)."""

    max_limit = 200

    def get_offset(self, request: Request) -> int:
        return min(super().get_offset(request), MAX_ID - self.max_limit)


class KnowledgeApi(APIView):
    """Base of every knowledge view: one access rule, and service errors translated into the one
    error body."""

    permission_classes = [requires_scope(Scope.KNOWLEDGE_WRITE), SecretKeyOrStaff]

    def handle_exception(self, exc: Exception) -> Response:
        if isinstance(exc, FaqEntryConflict):
            return conflict_response(exc)
        if isinstance(exc, DjangoValidationError):
            exc = exceptions.ValidationError(validation_detail(exc))
        elif isinstance(exc, ObjectDoesNotExist):  # deleted between our lookup and the service's
            exc = exceptions.NotFound()
        return super().handle_exception(exc)


def conflict_response(conflict: FaqEntryConflict, **details: Any) -> Response:
    """409 ``conflict``: the versions involved, plus whatever the view adds for the client to merge with."""
    body = error_body("conflict", str(conflict), {"current_version": conflict.current_version,
                                                  "expected_version": conflict.expected_version, **details})
    return Response(body, status=status.HTTP_409_CONFLICT)


def validation_detail(error: DjangoValidationError) -> dict[str, list[str]]:
    """Django's errors keyed like DRF's, so both reach clients as ``details.fields``."""
    if not hasattr(error, "error_dict"):
        return {api_settings.NON_FIELD_ERRORS_KEY: error.messages}
    return {api_settings.NON_FIELD_ERRORS_KEY if field == NON_FIELD_ERRORS else field: messages
            for field, messages in error.message_dict.items()}


def request_key(request: Request) -> ApiKey | None:
    return request.auth if isinstance(request.auth, ApiKey) else None


def actor(request: Request) -> User | None:
    """The signed-in person to record on revisions; key-authenticated writes have none."""
    return request.user if isinstance(request.user, User) else None


def knowledge_bases_visible(request: Request) -> QuerySet[KnowledgeBase]:
    key = request_key(request)
    queryset = KnowledgeBase.objects.select_related("calibration")
    return queryset.filter(pk=key.kb_id) if key is not None and key.kb_id is not None else queryset


def knowledge_base_or_404(request: Request, slug: str) -> KnowledgeBase:
    """The knowledge base, if this caller may see it. A key bound to another one gets the same
    404 as for a slug that does not exist: it must not learn which slugs exist."""
    kb = knowledge_bases_visible(request).filter(slug=slug).first()
    if kb is None:
        raise exceptions.NotFound("No such knowledge base.")
    return kb


def paginated(*, request: Request, view: APIView, queryset: QuerySet[Any],
              serializer_class: type[serializers.BaseSerializer]) -> Response:
    paginator = Pagination()
    page = paginator.paginate_queryset(queryset, request, view=view)
    assert page is not None  # PAGE_SIZE is set, so pagination always applies
    return paginator.get_paginated_response(serializer_class(page, many=True).data)


class TextField(serializers.CharField):
    """Text only: DRF's CharField turns 42 or true into "42" or "True", hiding a client's bug.

    ``limit`` is the service's length limit: documented in the schema as maxLength, checked by the
    service (on the stripped text, with its own message)."""

    def __init__(self, *, limit: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.limit = limit

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


def no_control_characters(value: str) -> None:
    if kb_text.strip_control_characters(value) != value:
        raise serializers.ValidationError("contains control characters")


class StrictIntegerField(serializers.IntegerField):
    """A JSON integer: DRF's IntegerField also takes "7" and 7.0."""

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictFloatField(serializers.FloatField):
    """A JSON number: DRF's FloatField also takes true (as 1.0) and "0.5"."""

    def to_internal_value(self, data: Any) -> float:
        if isinstance(data, bool) or not isinstance(data, int | float):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictInput(serializers.Serializer):
    """Refuses keys it does not take: a misspelt or read-only field in a PATCH would otherwise be
    ignored without a word, and the client would believe it had changed something."""

    read_only_fields: frozenset[str] = frozenset()
    refuses_unknown_fields = True  # documented as additionalProperties: false (kbservice.api.schema)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        data = self.initial_data if isinstance(self.initial_data, Mapping) else {}
        extra = sorted(set(data) - set(self.fields))
        if extra:
            raise serializers.ValidationError(
                {field: ["This field is read-only." if field in self.read_only_fields else "Unknown field."]
                 for field in extra})
        return attrs
