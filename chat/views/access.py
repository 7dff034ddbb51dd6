"""Who may open which console page: signed-in staff, by the scopes of their role (``ROLE_SCOPES``)."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse

from chat.models import Scope
from kbservice.api.auth import user_scopes

View = Callable[..., HttpResponse]

# (scope needed, url name, label): the console's sections, in menu order.
SECTIONS = [
    (Scope.TICKETS, "console:inbox", "Inbox"),
    (Scope.RERANK, "console:workbench", "Workbench"),
    (Scope.ANALYTICS, "console:insights", "Insights"),
]


def role_label(user: Any) -> str:
    if user.is_superuser:
        return "admin"
    names = sorted(user.groups.values_list("name", flat=True))
    return ", ".join(names) or "no role"


def console_context(request: HttpRequest, **extra: Any) -> dict[str, Any]:
    scopes = user_scopes(request.user)
    nav = [{"url": reverse(name), "label": label, "active": request.path.startswith(reverse(name))
            if name != "console:inbox" else request.path == reverse(name) or "/tickets/" in request.path}
           for scope, name, label in SECTIONS if scope in scopes]
    return {"nav": nav, "scopes": scopes, "role": role_label(request.user), **extra}


def render_console(request: HttpRequest, template: str, context: dict[str, Any] | None = None,
                   status: int = 200) -> HttpResponse:
    return render(request, template, console_context(request, **(context or {})), status=status)


def console_view(scope: str) -> Callable[[View], View]:
    """Anonymous visitors go to the console login; signed-in users without ``scope`` get a 403 page."""

    def decorator(view: View) -> View:
        @wraps(view)
        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path(), reverse("console:login"))
            if scope not in user_scopes(request.user):
                return render_console(request, "chat/console/forbidden.html", {"needed": scope}, status=403)
            return view(request, *args, **kwargs)

        return wrapped

    return decorator
