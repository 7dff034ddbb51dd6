"""The one error body of every API response: ``{"error": {"code", "message", "details"}}``."""

from typing import Any

from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler


def error_body(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details or {}}}


def _message(exc: exceptions.APIException) -> str:
    if isinstance(exc, exceptions.ValidationError):
        return "The request is invalid; see details."
    detail = exc.detail
    if isinstance(detail, list | dict):
        return str(exc.default_detail)
    return str(detail)


class PayloadTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "too_large"
    default_detail = "The request body is larger than this server accepts."


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, RequestDataTooBig):
        exc = PayloadTooLarge()
    response = drf_exception_handler(exc, context)
    if response is None:
        return None  # a real server error: Django's handler500 answers in the same shape
    assert isinstance(exc, exceptions.APIException)
    details: dict[str, Any] = {}
    if isinstance(exc.detail, dict):
        details = {"fields": exc.detail}
    elif isinstance(exc.detail, list):
        details = {"errors": exc.detail}
    wait = getattr(exc, "wait", None)
    if isinstance(exc, exceptions.Throttled) and wait is not None:
        details["retry_after"] = int(wait)
    response.data = error_body(str(exc.get_codes() if not isinstance(exc.detail, dict | list) else exc.default_code),
                               _message(exc), details)
    return response


def json_error(request: HttpRequest, *, status_code: int, code: str, message: str) -> JsonResponse:
    return JsonResponse(error_body(code, message), status=status_code)


API_PREFIXES = ("/api/", "/v1/")


def _wants_json(request: HttpRequest) -> bool:
    return request.path.startswith(API_PREFIXES) or "application/json" in request.headers.get("Accept", "")


def handler404(request: HttpRequest, exception: Exception) -> HttpResponse:
    if not _wants_json(request):
        return defaults.page_not_found(request, exception)
    return json_error(request, status_code=status.HTTP_404_NOT_FOUND, code="not_found", message="Not found.")


def handler400(request: HttpRequest, exception: Exception) -> HttpResponse:
    if not _wants_json(request):
        return defaults.bad_request(request, exception)
    if isinstance(exception, RequestDataTooBig):
        return json_error(request, status_code=413, code="too_large", message=PayloadTooLarge.default_detail)
    return json_error(request, status_code=400, code="bad_request", message="Bad request.")


def handler403(request: HttpRequest, exception: Exception) -> HttpResponse:
    if not _wants_json(request):
        return defaults.permission_denied(request, exception)
    return json_error(request, status_code=403, code="permission_denied", message="Permission denied.")


def handler500(request: HttpRequest) -> HttpResponse:
    if not _wants_json(request):
        return defaults.server_error(request)
    return json_error(request, status_code=500, code="server_error", message="Internal server error.")
