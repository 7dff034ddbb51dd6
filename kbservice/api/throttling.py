"""Per-key request rates, counted in Redis (the Django cache)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from django.conf import settings
from rest_framework.request import Request
from rest_framework.throttling import SimpleRateThrottle

from chat.models import ApiKey

if TYPE_CHECKING:
    from rest_framework.views import APIView

logger = logging.getLogger(__name__)


class KeyRateThrottle(SimpleRateThrottle):
    """One budget per API key (per user for sessions, per address for anonymous callers).

    Fails open: with Redis down, requests are served unthrottled rather than refused, because a
    cache outage must not take the answer service down (README, "Failure behaviour")."""

    scope = "key"

    def get_rate(self) -> str:
        return settings.KB_THROTTLE_RATE

    def allow_request(self, request: Request, view: APIView) -> bool:
        if isinstance(request.auth, ApiKey) and request.auth.kind == ApiKey.Kind.PUBLISHABLE:
            self.rate = settings.KB_WIDGET_THROTTLE_RATE
        else:
            self.rate = settings.KB_THROTTLE_RATE
        self.num_requests, self.duration = self.parse_rate(self.rate)
        try:
            return super().allow_request(request, view)
        except Exception as exc:  # Redis unreachable
            logger.warning("throttle store unavailable, allowing request: %s", exc)
            return True

    def get_cache_key(self, request: Request, view: Any) -> str:
        if isinstance(request.auth, ApiKey):
            ident = f"key:{request.auth.pk}"
        elif request.user and request.user.is_authenticated:
            ident = f"user:{request.user.pk}"
        else:
            ident = f"ip:{self.get_ident(request)}"
        return f"throttle:{ident}"
