"""API keys in a header (``Authorization: Bearer …`` or ``X-Api-Key``), and who may do what."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from django.db.models import Q
from django.utils import timezone
from rest_framework import authentication, exceptions, permissions
from rest_framework.request import Request

if TYPE_CHECKING:  # rest_framework.views imports this module through the API settings
    from rest_framework.views import APIView

from chat.models import ApiKey, Scope

# last_used_at is informational: one write per key per minute, not one per request.
LAST_USED_RESOLUTION = timedelta(minutes=1)

# What a signed-in staff member may do, by group; superusers may do everything.
ROLE_SCOPES: dict[str, set[str]] = {
    "agent": {Scope.ASK, Scope.FEEDBACK, Scope.TICKETS, Scope.RERANK},
    "knowledge manager": {Scope.ASK, Scope.FEEDBACK, Scope.TICKETS, Scope.RERANK, Scope.KNOWLEDGE_WRITE,
                          Scope.ANALYTICS},
    "admin": set(Scope.values),
}


@dataclass(frozen=True)
class ApiKeyPrincipal:
    """``request.user`` for key-authenticated requests (``request.auth`` is the ApiKey)."""

    key: ApiKey
    is_authenticated: bool = True
    is_staff: bool = False
    is_superuser: bool = False
    is_active: bool = True

    @property
    def pk(self) -> None:
        return None


def raw_key_from(request: Request) -> str | None:
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip() or None
    return request.headers.get("X-Api-Key", "").strip() or None


def request_origin(request: Request) -> str:
    """The page's origin. Browsers send ``Origin`` on every cross-origin request but leave it out of
    same-origin GETs (the widget polling on the service's own demo page), which carry ``Referer``."""
    origin = request.headers.get("Origin", "")
    if origin or request.method not in ("GET", "HEAD"):
        return origin
    referer = urlsplit(request.headers.get("Referer", ""))
    return f"{referer.scheme}://{referer.netloc}" if referer.scheme and referer.netloc else ""


# Every open widget repeats this lookup with each poll: raw SQL skips the ORM's query compilation,
# which was most of its cost (the key's knowledge base loads when an ask needs it).
_ACTIVE_KEY = f"SELECT * FROM {ApiKey._meta.db_table} WHERE key_hash = %s AND revoked_at IS NULL"


class ApiKeyAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request: Request) -> tuple[ApiKeyPrincipal, ApiKey] | None:
        raw = raw_key_from(request)
        if raw is None:
            return None
        key = next(iter(ApiKey.objects.raw(_ACTIVE_KEY, [ApiKey.digest(raw)])), None)
        if key is None:
            raise exceptions.AuthenticationFailed("Invalid or revoked API key.")
        if key.kind == ApiKey.Kind.PUBLISHABLE:
            origin = request_origin(request)
            if "*" not in key.allowed_origins and origin not in key.allowed_origins:
                raise exceptions.PermissionDenied(f"Origin {origin or '(none)'} is not allowed for this key.")
        now = timezone.now()
        if key.last_used_at is None or now - key.last_used_at > LAST_USED_RESOLUTION:
            ApiKey.objects.filter(pk=key.pk).filter(
                Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - LAST_USED_RESOLUTION)
            ).update(last_used_at=now)
        return ApiKeyPrincipal(key), key

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="kbservice"'


def user_scopes(user: Any) -> set[str]:
    if not getattr(user, "is_authenticated", False) or isinstance(user, ApiKeyPrincipal):
        return set()
    if user.is_superuser:
        return set(Scope.values)
    groups = {name.lower() for name in user.groups.values_list("name", flat=True)}
    return set().union(*(ROLE_SCOPES.get(group, set()) for group in groups)) if groups else set()


def request_has_scope(request: Request, scope: str) -> bool:
    if isinstance(request.auth, ApiKey):
        return request.auth.has_scope(scope)
    return scope in user_scopes(request.user)


def requires_scope(scope: str) -> type[permissions.BasePermission]:
    class HasScope(permissions.BasePermission):
        message = f"This needs the '{scope}' scope."

        def has_permission(self, request: Request, view: APIView) -> bool:
            if not request.user or not request.user.is_authenticated:
                raise exceptions.NotAuthenticated()
            return request_has_scope(request, scope)

    HasScope.__name__ = f"HasScope_{scope.replace(':', '_')}"
    return HasScope
