"""drf-spectacular extensions: how our authentication, errors and custom fields appear in OpenAPI."""

from http import HTTPStatus
from typing import Any

from django.conf import settings
from django.core.validators import RegexValidator
from drf_spectacular.extensions import OpenApiAuthenticationExtension, OpenApiSerializerFieldExtension
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import OpenApiResponse
from rest_framework import permissions, serializers

BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
# Text never carries control characters (DRF refuses NUL and lone surrogates, the services the rest).
_FORBIDDEN = r"\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff"
ANY_TEXT = f"^[^{_FORBIDDEN}]*$"
# Required text must have a visible character: it is stripped before it is checked.
VISIBLE_TEXT = f"^[^{_FORBIDDEN}]*[^\\s{_FORBIDDEN}][^{_FORBIDDEN}]*$"


def text_constraints(*, allow_blank: bool) -> dict[str, Any]:
    return {"pattern": ANY_TEXT} if allow_blank else {"minLength": 1, "pattern": VISIBLE_TEXT}


class ApiKeyScheme(OpenApiAuthenticationExtension):
    target_class = "kbservice.api.auth.ApiKeyAuthentication"
    name = "ApiKey"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {"type": "http", "scheme": "bearer",
                "description": "A kbservice API key (kb_pk_… or kb_sk_…); `X-Api-Key: <key>` works too."}


class RerankDocumentFieldSchema(OpenApiSerializerFieldExtension):
    target_class = "rerank.apis.DocumentField"

    def map_serializer_field(self, auto_schema: Any, direction: Any) -> dict[str, Any]:
        text = {"type": "string", "maxLength": settings.KB_RERANK_MAX_DOCUMENT_CHARS,
                **text_constraints(allow_blank=False)}
        return {"oneOf": [text, {"type": "object", "properties": {"text": text}, "required": ["text"]}]}


class ErrorDetail(serializers.Serializer):
    code = serializers.CharField(help_text="Stable, machine-readable: `invalid`, `not_found`, `throttled`, …")
    message = serializers.CharField()
    details = serializers.DictField(help_text="`fields` (field → messages) for invalid input, `retry_after` "
                                              "(seconds) when throttled; on a conflict the versions, and for an "
                                              "edit the `current` entry and your `submitted` fields.")


class ErrorOutput(serializers.Serializer):
    """The one error body (kbservice.api.errors)."""

    error = ErrorDetail()


def errors(*codes: int) -> dict[int, OpenApiResponse]:
    """Error responses an operation has besides the ones every operation of its kind has
    (see ApiAutoSchema), for ``@extend_schema(responses={200: …, **errors(404)})``."""
    return {code: OpenApiResponse(ErrorOutput, description=HTTPStatus(code).phrase) for code in codes}


class ApiAutoSchema(AutoSchema):
    """Documents the errors every operation can answer with, so the schema tells clients (and
    schemathesis) the truth about 4xx: denied (401/403) and throttled (429) wherever a key or a
    session is needed, invalid (400) and too large (413) wherever a body or a validated query is
    read, and 404 wherever the path names something. Operation-specific errors (409 on a stale
    write, 404 for a knowledge base named in the body, 503) are declared with ``errors()``."""

    def _map_serializer_field(self, field: Any, direction: Any, bypass_extensions: bool = False) -> dict[str, Any]:
        schema: dict[str, Any] = super()._map_serializer_field(field, direction, bypass_extensions)
        if (direction == "request" and isinstance(field, serializers.CharField)
                and not schema.keys() & {"pattern", "format", "enum"}
                and not any(isinstance(validator, RegexValidator) for validator in field.validators)):
            schema.update(text_constraints(allow_blank=field.allow_blank))
            limit = getattr(field, "limit", None)  # one the service checks (knowledge.apis.common.TextField)
            if limit:
                schema["maxLength"] = limit
        return schema

    def _map_basic_serializer(self, serializer: Any, direction: Any) -> dict[str, Any]:
        schema: dict[str, Any] = super()._map_basic_serializer(serializer, direction)
        if direction == "request" and getattr(serializer, "refuses_unknown_fields", False):
            schema["additionalProperties"] = False  # knowledge.apis.common.StrictInput
        return schema

    def _get_request_for_media_type(self, serializer: Any, direction: Any = "request") -> Any:
        # drf-spectacular documents a PATCH body as a partial serializer (nothing required), but
        # our views validate the whole input serializer: its required fields (an entry's version)
        # are required in a PATCH too.
        if self.method != "PATCH":
            return super()._get_request_for_media_type(serializer, direction)
        self.method = "POST"
        try:
            return super()._get_request_for_media_type(serializer, direction)
        finally:
            self.method = "PATCH"

    def _get_response_bodies(self, direction: Any = "response") -> dict[str, Any]:
        responses: dict[str, Any] = super()._get_response_bodies(direction)
        for code, response in errors(*self._common_error_codes()).items():
            responses.setdefault(str(code), self._get_response_for_code(response, str(code), direction=direction))
        return dict(sorted(responses.items()))

    def _common_error_codes(self) -> list[int]:
        codes = []
        if self.method in BODY_METHODS and self.get_request_serializer() is not None:
            codes += [400, 413]
        elif any(parameter.get("in") == "query" and parameter["name"] not in ("limit", "offset")
                 for parameter in self._get_parameters()):
            codes.append(400)
        if not all(isinstance(permission, permissions.AllowAny) for permission in self.view.get_permissions()):
            codes += [401, 403]
        if "{" in self.path:
            codes.append(404)
        if self.view.get_throttles():
            codes.append(429)
        return codes
