"""Count events in Redis hashes, one pipelined round trip per event, failing open.

A metric is a hash; a field is one label combination (a JSON list of the label values, so a value
may contain any character) and holds the count. Counting never fails a request: with Redis
unreachable the event is dropped and writes pause for a few seconds, so an outage does not cost
every request a connection timeout.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from collections.abc import Callable
from typing import Any

import redis
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from prometheus_client.utils import floatToGoString

logger = logging.getLogger(__name__)

ASKS = "kb:metrics:asks"
RERANK_REQUESTS = "kb:metrics:rerank_requests"
RERANK_SECONDS = "kb:metrics:rerank_seconds"
HTTP_REQUESTS = "kb:metrics:http_requests"
API_ERRORS = "kb:metrics:api_errors"
UNHANDLED_EXCEPTIONS = "kb:metrics:unhandled_exceptions"
HISTOGRAM_SUM = "sum"

# Upper bounds (seconds) of the rerank latency buckets: interactive reranks take well under a second;
# timeouts sit at KB_RERANK_TIMEOUT (5 s); late reranks may wait up to KB_RERANK_EXPIRES (120 s).
RERANK_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, math.inf)
# Methods outside this set are counted as "other": a label must not take arbitrary client input.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
PAUSE_AFTER_FAILURE_SECONDS = 5.0

_client: redis.Redis | None = None
_paused_until = 0.0


def metrics_redis() -> redis.Redis:
    """The client for metrics; short timeouts, because counting must never hold up a request."""
    global _client
    if _client is None:
        _client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=0.5, socket_connect_timeout=0.5)
    return _client


def label_field(*values: str) -> str:
    return json.dumps(values, ensure_ascii=False)


def _increment(*updates: tuple[str, str, float]) -> None:
    global _paused_until
    if time.monotonic() < _paused_until:
        return
    try:
        pipe = metrics_redis().pipeline(transaction=False)
        for key, field, amount in updates:
            if isinstance(amount, int):
                pipe.hincrby(key, field, amount)
            else:
                pipe.hincrbyfloat(key, field, amount)
        pipe.execute()
    except redis.RedisError as exc:
        _paused_until = time.monotonic() + PAUSE_AFTER_FAILURE_SECONDS
        logger.warning("metrics not recorded, Redis unavailable: %s", exc)


def record_ask(*, kb: str, decision: str, cache: str, rerank: str) -> None:
    _increment((ASKS, label_field(kb, decision, cache, rerank), 1))


def record_rerank(*, outcome: str, seconds: float) -> None:
    bucket = next(bound for bound in RERANK_BUCKETS if seconds <= bound)
    _increment((RERANK_REQUESTS, label_field(outcome), 1), (RERANK_SECONDS, floatToGoString(bucket), 1),
               (RERANK_SECONDS, HISTOGRAM_SUM, float(seconds)))


def record_unhandled_exception(sender: Any, request: HttpRequest | None = None, **kwargs: Any) -> None:
    """``got_request_exception`` receiver: Django sends it from inside its ``except`` block."""
    exc = sys.exc_info()[1]
    name = f"{type(exc).__module__}.{type(exc).__qualname__}" if exc is not None else "unknown"
    _increment((UNHANDLED_EXCEPTIONS, label_field(name), 1))


def error_code(response: HttpResponse) -> str | None:
    """The ``code`` of a response in the one error shape, whichever part of the code wrote it."""
    if response.status_code < 400 or response.streaming or "json" not in response.get("Content-Type", ""):
        return None
    try:
        code = json.loads(response.content)["error"]["code"]
    except (ValueError, TypeError, KeyError):
        return None
    return code if isinstance(code, str) else None


def request_counting_middleware(get_response: Callable[[HttpRequest], HttpResponse]) -> Callable[..., HttpResponse]:
    """Counts every response by method and status, and error bodies by code. Outermost, so it sees
    what the client sees, including answers other middleware gave (413, 503)."""

    def middleware(request: HttpRequest) -> HttpResponse:
        response = get_response(request)
        method = request.method if request.method in KNOWN_METHODS else "other"
        status = str(response.status_code)
        updates: list[tuple[str, str, float]] = [(HTTP_REQUESTS, label_field(str(method), status), 1)]
        code = error_code(response)
        if code is not None:
            updates.append((API_ERRORS, label_field(status, code), 1))
        _increment(*updates)
        return response

    return middleware
