"""drf-spectacular extensions: how our authentication and custom fields appear in OpenAPI."""

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension, OpenApiSerializerFieldExtension
from drf_spectacular.plumbing import build_basic_type
from drf_spectacular.types import OpenApiTypes


class ApiKeyScheme(OpenApiAuthenticationExtension):
    target_class = "kbservice.api.auth.ApiKeyAuthentication"
    name = "ApiKey"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {"type": "http", "scheme": "bearer",
                "description": "A kbservice API key (kb_pk_… or kb_sk_…); `X-Api-Key: <key>` works too."}


class RerankDocumentFieldSchema(OpenApiSerializerFieldExtension):
    target_class = "rerank.apis.DocumentField"

    def map_serializer_field(self, auto_schema: Any, direction: Any) -> dict[str, Any]:
        text = build_basic_type(OpenApiTypes.STR)
        return {"oneOf": [text, {"type": "object", "properties": {"text": text}, "required": ["text"]}]}
