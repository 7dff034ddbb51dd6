"""Request body limits, enforced from the declared Content-Length before anything reads the body.

Django's own DATA_UPLOAD_MAX_MEMORY_SIZE fires only when a view (or the CSRF check) reads the body,
answers 400, skips uploaded files, and DRF's JSON parser bypasses it; this answers 413 first."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.deprecation import MiddlewareMixin

from kbservice.api.errors import error_body, wants_json

# Views that take an uploaded import file: their bodies may be as large as KB_IMPORT_MAX_BYTES allows.
FILE_UPLOAD_VIEWS = frozenset({"admin:knowledge_faqentry_import"})


def body_limit(request: HttpRequest) -> tuple[int, str]:
    """The largest body this request's view accepts, and the setting that says so."""
    match = request.resolver_match
    if match is not None and match.view_name in FILE_UPLOAD_VIEWS:
        # The file, plus the multipart framing and the form's other fields.
        return settings.KB_IMPORT_MAX_BYTES + settings.KB_MAX_BODY_BYTES, "KB_IMPORT_MAX_BYTES"
    return settings.KB_MAX_BODY_BYTES, "KB_MAX_BODY_BYTES"


def declared_length(request: HttpRequest) -> int:
    # Without a valid Content-Length, Django reads no body at all (chunked uploads arrive empty).
    try:
        return max(int(request.META.get("CONTENT_LENGTH") or 0), 0)
    except ValueError:
        return 0


def too_large_response(request: HttpRequest, *, size: int, limit: int, setting: str) -> HttpResponse:
    message = f"The request body is {size:,} bytes; the limit is {limit:,} bytes ({setting})."
    if wants_json(request):
        return JsonResponse(error_body("request_too_large", message, {"size": size, "limit": limit}), status=413)
    return HttpResponse(message, status=413, content_type="text/plain; charset=utf-8")


class RequestBodyLimitMiddleware(MiddlewareMixin):
    """Refuses an oversized body before the view, the CSRF check or a parser reads a byte of it.

    Runs in ``process_view`` (the URL is resolved by then, so upload views get their own limit);
    it must come before CsrfViewMiddleware, whose ``process_view`` parses form bodies."""

    def process_view(
        self, request: HttpRequest, view_func: Any, view_args: Any, view_kwargs: Any,
    ) -> HttpResponse | None:
        size = declared_length(request)
        limit, setting = body_limit(request)
        return too_large_response(request, size=size, limit=limit, setting=setting) if size > limit else None
