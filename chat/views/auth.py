"""Staff sign-in for the console (Django auth; sessions, CSRF, the usual password hashing)."""

from __future__ import annotations

from django.contrib.auth.views import LoginView, LogoutView
from django.urls import reverse

from kbservice.api.auth import user_scopes


class ConsoleLoginView(LoginView):
    template_name = "chat/console/login.html"
    redirect_authenticated_user = True

    def get_default_redirect_url(self) -> str:
        # Each role lands on the first console section it may open, never on a 403.
        scopes = user_scopes(self.request.user)
        for scope, name in (("tickets", "console:inbox"), ("rerank", "console:workbench"),
                            ("analytics", "console:insights")):
            if scope in scopes:
                return reverse(name)
        return reverse("console:inbox")  # no role: its 403 page says so (the login page would loop)


class ConsoleLogoutView(LogoutView):
    def get_default_redirect_url(self) -> str:
        return reverse("console:login")
