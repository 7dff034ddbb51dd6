"""The one error body of every API response: ``{"error": {"code", "message", "details"}}``."""

import logging
import sys
from collections.abc import Callable
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.db import InterfaceError, OperationalError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

logger = logging.getLogger(__name__)


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
    default_code = "request_too_large"
    default_detail = "The request body is larger than this server accepts."


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, RequestDataTooBig):
        exc = PayloadTooLarge()
    # DRF answers Django's Http404 and PermissionDenied (get_object_or_404, …) but leaves them as
    # they are; translated here, so the body below is built from an APIException like any other.
    elif isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
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


API_PREFIXES = ("/api/", "/v1/", "/v2/")


def wants_json(request: HttpRequest) -> bool:
    return request.path.startswith(API_PREFIXES) or "application/json" in request.headers.get("Accept", "")


def handler404(request: HttpRequest, exception: Exception) -> HttpResponse:
    if not wants_json(request):
        return defaults.page_not_found(request, exception)
    return json_error(request, status_code=status.HTTP_404_NOT_FOUND, code="not_found", message="Not found.")


def handler400(request: HttpRequest, exception: Exception) -> HttpResponse:
    if not wants_json(request):
        return defaults.bad_request(request, exception)
    if isinstance(exception, RequestDataTooBig):
        return json_error(request, status_code=413, code="request_too_large", message=PayloadTooLarge.default_detail)
    return json_error(request, status_code=400, code="bad_request", message="Bad request.")


def handler403(request: HttpRequest, exception: Exception) -> HttpResponse:
    if not wants_json(request):
        return defaults.permission_denied(request, exception)
    return json_error(request, status_code=403, code="permission_denied", message="Permission denied.")


def handler500(request: HttpRequest) -> HttpResponse:
    # Django calls this while handling the exception. A database outage that surfaced in a middleware
    # (e.g. loading the session's user) gets here instead of DatabaseUnavailableMiddleware.
    if database_unavailable(sys.exc_info()[1]):
        return database_unavailable_response(request)
    if not wants_json(request):
        return defaults.server_error(request)
    return json_error(request, status_code=500, code="server_error", message="Internal server error.")


DATABASE_RETRY_AFTER_SECONDS = 5
# SQLSTATE classes of a connection the server refused or cut: 08 connection exception, 57P shutdown,
# crash or still starting. Other operational errors (deadlocks, statement timeouts) stay 500s.
_UNAVAILABLE_SQLSTATES = ("08", "57P")
_UNAVAILABLE_PAGE = ("<!doctype html><html><head><title>Service unavailable</title></head><body>"
                     "<h1>Service unavailable</h1><p>The database cannot be reached. Try again in a moment.</p>"
                     "</body></html>")


def database_unavailable(exc: BaseException | None) -> bool:
    """Whether ``exc`` means Postgres cannot be reached (down, restarting, connection lost)."""
    if isinstance(exc, InterfaceError):  # the connection was already closed under us
        return True
    if not isinstance(exc, OperationalError):
        return False
    # Connection failures raised by the client itself (refused, timed out, closed) carry no SQLSTATE.
    sqlstate = getattr(exc.__cause__, "sqlstate", None)
    return sqlstate is None or sqlstate.startswith(_UNAVAILABLE_SQLSTATES)


def database_unavailable_response(request: HttpRequest) -> HttpResponse:
    response: HttpResponse
    if wants_json(request):
        response = JsonResponse(error_body("database_unavailable", "The database is unavailable. Try again shortly.",
                                           {"retry_after": DATABASE_RETRY_AFTER_SECONDS}), status=503)
    else:
        response = HttpResponse(_UNAVAILABLE_PAGE, status=503)
    response["Retry-After"] = str(DATABASE_RETRY_AFTER_SECONDS)
    return response


class DatabaseUnavailableMiddleware:
    """A quick 503 (error shape for the API, a plain page otherwise) instead of a 500 and a traceback
    for every request while Postgres is down; connect_timeout keeps "quick" true when it hangs."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not database_unavailable(exception):
            return None
        logger.warning("database unavailable, answering 503 to %s %s: %s", request.method, request.path, exception)
        return database_unavailable_response(request)
