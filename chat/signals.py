"""Cross-origin access for the chat widget: an origin may call the API when a live publishable key
lists it (the key's own origin check still applies to every request it makes)."""

import threading
from typing import Any

from cachetools import TTLCache, cached
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver
from django.http import HttpRequest

from chat.models import ApiKey

WIDGET_PATHS = ("/api/v1/ask", "/api/v1/tickets", "/api/v1/feedback")
# Every widget poll asks this, and hundreds of open widgets poll every few seconds. CORS only decides
# whether a browser may read a response (each request's own key is still checked against its
# origins), so an answer may be a few seconds old in another process; this process forgets it
# whenever a key is saved.
_live_origins: TTLCache[str, bool] = TTLCache(maxsize=1024, ttl=10)


@cached(_live_origins, lock=threading.Lock())
def _origin_has_live_widget_key(origin: str) -> bool:
    return ApiKey.objects.filter(kind=ApiKey.Kind.PUBLISHABLE, revoked_at__isnull=True,
                                 allowed_origins__contains=[origin]).exists()


def cors_allow_widget_origins(sender: Any, request: HttpRequest, **kwargs: Any) -> bool:
    origin = request.headers.get("Origin")
    if not origin or not request.path.startswith(WIDGET_PATHS):
        return False
    return _origin_has_live_widget_key(origin)


@receiver([post_save, post_delete], sender=ApiKey, dispatch_uid="chat-widget-origins-forget")
def live_origins_forget(**kwargs: Any) -> None:
    _live_origins.clear()
