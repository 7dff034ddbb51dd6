"""``POST /v1/rerank``: Cohere/Jina-compatible reranking, and its batch form."""

from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings
from drf_spectacular.utils import extend_schema, extend_schema_view, inline_serializer
from rest_framework import exceptions, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from kbservice.api.auth import requires_scope
from kbservice.api.schema import errors
from rerank.batching import RerankRequest
from rerank.services import RerankOutcome, rerank_score, size_problem


class RerankUnavailable(exceptions.APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_code = "rerank_unavailable"
    default_detail = "No rerank worker answered in time; retry shortly."


class DocumentField(serializers.Field):
    """A document is a string or ``{"text": string}`` (Cohere and Jina accept both)."""

    default_error_messages = {
        "invalid": "Each document must be a string or an object with a string 'text'.",
        "blank": "Documents must not be empty.",
        "too_long": "A document may have at most {limit} characters.",
    }

    def to_internal_value(self, data: Any) -> str:
        if isinstance(data, dict):
            data = data.get("text")
        if not isinstance(data, str):
            self.fail("invalid")
        if not data.strip():
            self.fail("blank")
        if len(data) > settings.KB_RERANK_MAX_DOCUMENT_CHARS:
            self.fail("too_long", limit=settings.KB_RERANK_MAX_DOCUMENT_CHARS)
        return data

    def to_representation(self, value: str) -> str:
        return value


def _documents_field() -> serializers.ListField:
    return serializers.ListField(child=DocumentField(), min_length=1, max_length=settings.KB_RERANK_MAX_DOCUMENTS)


class CommonInput(serializers.Serializer):
    model = serializers.CharField(required=False, allow_blank=True, max_length=300,
                                  help_text="Accepted for compatibility; the worker's model answers.")
    top_n = serializers.IntegerField(required=False, min_value=1)
    return_documents = serializers.BooleanField(default=True)
    instruction = serializers.CharField(required=False, allow_blank=True, max_length=2000,
                                        help_text="Qwen3-Reranker instruction (default: customer-service).")


def _refuse_oversized(requests: list[RerankRequest]) -> None:
    problem = size_problem(requests)
    if problem is not None:
        raise serializers.ValidationError({"documents": problem})


class RerankInput(CommonInput):
    query = serializers.CharField(max_length=settings.KB_RERANK_MAX_DOCUMENT_CHARS)
    documents = _documents_field()

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        _refuse_oversized([RerankRequest(query=attrs["query"], documents=attrs["documents"])])
        return attrs


class BatchInput(CommonInput):
    queries = serializers.ListField(child=serializers.CharField(max_length=settings.KB_RERANK_MAX_DOCUMENT_CHARS),
                                    min_length=1, max_length=settings.KB_RERANK_MAX_QUERIES)
    documents = serializers.ListField(child=_documents_field(), min_length=1,
                                      max_length=settings.KB_RERANK_MAX_QUERIES,
                                      help_text="One list of documents per query, in the same order.")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if len(attrs["queries"]) != len(attrs["documents"]):
            raise serializers.ValidationError({"documents": "Give exactly one list of documents per query."})
        total = sum(len(documents) for documents in attrs["documents"])
        if total > settings.KB_RERANK_MAX_BATCH_DOCUMENTS:
            raise serializers.ValidationError({"documents": (
                f"The batch has {total} documents in all; the limit is {settings.KB_RERANK_MAX_BATCH_DOCUMENTS} "
                "(KB_RERANK_MAX_BATCH_DOCUMENTS). Split it into several calls.")})
        _refuse_oversized([RerankRequest(query=query, documents=documents)
                           for query, documents in zip(attrs["queries"], attrs["documents"], strict=True)])
        return attrs


_result = inline_serializer("RerankResult", {
    "index": serializers.IntegerField(),
    "relevance_score": serializers.FloatField(),
    "document": inline_serializer("RerankDocument", {"text": serializers.CharField()}, required=False),
})
_usage = inline_serializer("RerankUsage", {"total_tokens": serializers.IntegerField()})
RerankOutput = inline_serializer("RerankResponse", {
    "id": serializers.CharField(), "model": serializers.CharField(), "results": _result.__class__(many=True),
    "usage": _usage,
})
BatchOutput = inline_serializer("RerankBatchResponse", {
    "id": serializers.CharField(), "model": serializers.CharField(),
    "results": serializers.ListField(child=serializers.ListField(child=serializers.DictField())),
    "usage": _usage,
})


def _ranked(documents: list[str], scores: list[float], *, top_n: int | None, with_documents: bool) -> list[dict]:
    order = sorted(range(len(scores)), key=lambda index: -scores[index])[: top_n or len(scores)]
    return [
        {"index": index, "relevance_score": scores[index],
         **({"document": {"text": documents[index]}} if with_documents else {})}
        for index in order
    ]


def _run(requests: list[RerankRequest]) -> RerankOutcome:
    outcome = rerank_score(requests=requests, timeout=settings.KB_RERANK_API_TIMEOUT)
    if outcome.status != "ok":
        raise RerankUnavailable()
    return outcome


class RerankApi(APIView):
    permission_classes = [requires_scope("rerank")]

    @extend_schema(request=RerankInput, responses={200: RerankOutput, **errors(503)}, operation_id="rerank")
    def post(self, request: Request) -> Response:
        data = RerankInput(data=request.data)
        data.is_valid(raise_exception=True)
        params = data.validated_data
        rerank_request = RerankRequest(query=params["query"], documents=params["documents"],
                                       instruction=params.get("instruction") or None)
        outcome = _run([rerank_request])
        return Response({
            "id": str(uuid.uuid4()),
            "model": outcome.model,
            "results": _ranked(params["documents"], outcome.scores[0], top_n=params.get("top_n"),
                               with_documents=params["return_documents"]),
            "usage": {"total_tokens": outcome.total_tokens},
        })


class RerankBatchApi(APIView):
    permission_classes = [requires_scope("rerank")]

    @extend_schema(request=BatchInput, responses={200: BatchOutput, **errors(503)}, operation_id="rerank_batch")
    def post(self, request: Request) -> Response:
        data = BatchInput(data=request.data)
        data.is_valid(raise_exception=True)
        params = data.validated_data
        instruction = params.get("instruction") or None
        requests = [RerankRequest(query=query, documents=documents, instruction=instruction)
                    for query, documents in zip(params["queries"], params["documents"], strict=True)]
        outcome = _run(requests)
        return Response({
            "id": str(uuid.uuid4()),
            "model": outcome.model,
            "results": [
                _ranked(r.documents, scores, top_n=params.get("top_n"), with_documents=params["return_documents"])
                for r, scores in zip(requests, outcome.scores, strict=True)
            ],
            "usage": {"total_tokens": outcome.total_tokens},
        })


# The same operations under /api/v1/, left out of the schema: one documented path per operation.
@extend_schema_view(post=extend_schema(exclude=True))
class RerankAliasApi(RerankApi):
    pass


@extend_schema_view(post=extend_schema(exclude=True))
class RerankBatchAliasApi(RerankBatchApi):
    pass
