"""Liveness and readiness: /healthz says the process is up, /readyz that it can serve.

Orchestrator probes and the Prometheus scraper call web directly, by container address or
``localhost`` over plain HTTP: they are exempt from the HTTPS redirect (SECURE_REDIRECT_EXEMPT), and
``internal_endpoints_middleware`` serves them ahead of the host check every other path keeps."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import redis
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache

from kbservice.celery import app as celery_app
from kbservice.metrics.views import metrics

ReadinessCheck = Callable[[], dict[str, Any]]


@never_cache
def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def _database() -> dict[str, Any]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
        row = cursor.fetchone()
    return {"pgvector": row[0] if row else None}


def _redis() -> dict[str, Any]:
    redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2).ping()
    return {}


def _broker() -> dict[str, Any]:
    with celery_app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=2)
    return {}


CHECKS: dict[str, ReadinessCheck] = {
    "database": _database,
    "redis": _redis,
    "broker": _broker,
}


def readiness_check_register(name: str, check: ReadinessCheck) -> None:
    """Add what "ready" needs from an app (from its AppConfig.ready): ``check`` returns details to
    report, or raises with the reason it is not ready; /readyz names it when it fails."""
    CHECKS[name] = check


@never_cache
def readyz(request: HttpRequest) -> JsonResponse:
    results: dict[str, Any] = {}
    for name, check in CHECKS.items():
        started = time.monotonic()
        try:
            results[name] = {"ok": True, **check()}
        except Exception as exc:  # any failure of a dependency means "not ready", reported by name
            results[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        results[name]["ms"] = round((time.monotonic() - started) * 1000, 1)
    failing = [name for name, result in results.items() if not result["ok"]]
    return JsonResponse({"status": "unavailable" if failing else "ready", "failing": failing, "checks": results},
                        status=503 if failing else 200)


INTERNAL_ENDPOINTS: dict[str, Callable[[HttpRequest], HttpResponse]] = {
    "/healthz": healthz,
    "/readyz": readyz,
    "/metrics": metrics,  # guards itself: KB_METRICS_TOKEN or a private address
}


def internal_endpoints_middleware(get_response: Callable[[HttpRequest], HttpResponse]) -> Callable[..., HttpResponse]:
    def middleware(request: HttpRequest) -> HttpResponse:
        view = INTERNAL_ENDPOINTS.get(request.path_info)
        if view is None:
            return get_response(request)
        response = view(request)
        response["X-Frame-Options"] = "DENY"  # SecurityMiddleware, outside, adds the other headers
        return response

    return middleware
