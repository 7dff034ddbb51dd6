"""Cross-origin access for the chat widget: an origin may call the API when a live publishable key
lists it (the key's own origin check still applies to every request it makes)."""

from typing import Any

from django.http import HttpRequest

from chat.models import ApiKey

WIDGET_PATHS = ("/api/v1/ask", "/api/v1/tickets", "/api/v1/feedback")


def cors_allow_widget_origins(sender: Any, request: HttpRequest, **kwargs: Any) -> bool:
    origin = request.headers.get("Origin")
    if not origin or not request.path.startswith(WIDGET_PATHS):
        return False
    return ApiKey.objects.filter(kind=ApiKey.Kind.PUBLISHABLE, revoked_at__isnull=True,
                                 allowed_origins__contains=[origin]).exists()
