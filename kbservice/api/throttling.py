"""Per-key request rates, counted in Redis by the ``limits`` library.

A sliding-window counter (two integers per key and window, one Lua call per request) rather than
DRF's SimpleRateThrottle, which keeps every request's timestamp in one pickled list that each
request reads and rewrites: its cost grows with the rate allowed."""

from __future__ import annotations

import functools
import logging
import time
from typing import TYPE_CHECKING

import redis
from django.conf import settings
from limits import RateLimitItem, RateLimitItemPerSecond
from limits.storage import RedisStorage
from limits.strategies import SlidingWindowCounterRateLimiter
from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle

from chat.models import ApiKey

if TYPE_CHECKING:
    from rest_framework.views import APIView

logger = logging.getLogger(__name__)

KEY_PREFIX = "kb:throttle"
_limiter: SlidingWindowCounterRateLimiter | None = None


def _rate_limiter() -> SlidingWindowCounterRateLimiter:
    global _limiter
    if _limiter is None:
        storage = RedisStorage(settings.REDIS_URL, key_prefix=KEY_PREFIX, socket_timeout=1, socket_connect_timeout=1)
        _limiter = SlidingWindowCounterRateLimiter(storage)
    return _limiter


PERIOD_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@functools.cache  # a handful of distinct settings; parsed once, not per request
def _rate_item(rate: str) -> RateLimitItem:
    """``"600/min"`` (DRF's notation, as in KB_THROTTLE_RATE: the period's first letter counts)."""
    requests, period = rate.split("/")
    return RateLimitItemPerSecond(int(requests), PERIOD_SECONDS[period[0]])


class KeyRateThrottle(BaseThrottle):
    """One budget per API key (per user for sessions, per address for anonymous callers).

    Fails open: with Redis down, requests are served unthrottled rather than refused, because a
    cache outage must not take the answer service down (README, "Failure behaviour")."""

    def __init__(self) -> None:
        self.refused: tuple[RateLimitItem, str] | None = None

    def rate(self, request: Request) -> str:
        if isinstance(request.auth, ApiKey) and request.auth.kind == ApiKey.Kind.PUBLISHABLE:
            return settings.KB_WIDGET_THROTTLE_RATE
        return settings.KB_THROTTLE_RATE

    def allow_request(self, request: Request, view: APIView) -> bool:
        item = _rate_item(self.rate(request))
        ident = self.caller(request, view)
        try:
            allowed = _rate_limiter().hit(item, ident)
        except redis.RedisError as exc:
            logger.warning("throttle store unavailable, allowing request: %s", exc)
            return True
        if not allowed:
            self.refused = (item, ident)
        return allowed

    def wait(self) -> float | None:
        """Seconds until the caller's next request would be allowed (``Retry-After``)."""
        if self.refused is None:
            return None
        try:
            stats = _rate_limiter().get_window_stats(*self.refused)
        except redis.RedisError:
            return None
        return max(1.0, stats.reset_time - time.time())

    def caller(self, request: Request, view: APIView) -> str:
        if isinstance(request.auth, ApiKey):
            return f"key:{request.auth.pk}"
        if request.user and request.user.is_authenticated:
            return f"user:{request.user.pk}"
        return f"ip:{self.get_ident(request)}"


class TicketPollThrottle(KeyRateThrottle):
    """A conversation's polls: one budget per ticket (KB_POLL_THROTTLE_RATE), so hundreds of widgets
    waiting for replies under one site's key neither share nor drain that key's ask budget."""

    def rate(self, request: Request) -> str:
        return settings.KB_POLL_THROTTLE_RATE

    def caller(self, request: Request, view: APIView) -> str:
        return f"poll:{view.kwargs.get('public_id')}:{super().caller(request, view)}"
