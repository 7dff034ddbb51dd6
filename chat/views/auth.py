"""Staff sign-in for the console (Django auth; sessions, CSRF, the usual password hashing)."""

from __future__ import annotations

from django.contrib.auth.views import LoginView, LogoutView
from django.urls import reverse_lazy


class ConsoleLoginView(LoginView):
    template_name = "chat/console/login.html"
    redirect_authenticated_user = True
    next_page = reverse_lazy("console:inbox")

    def get_default_redirect_url(self) -> str:
        # A knowledge manager without the tickets scope would land on a 403: send each role home.
        from kbservice.api.auth import user_scopes

        scopes = user_scopes(self.request.user)
        if "tickets" in scopes:
            return str(reverse_lazy("console:inbox"))
        if "analytics" in scopes:
            return str(reverse_lazy("console:insights"))
        return str(reverse_lazy("console:workbench"))


class ConsoleLogoutView(LogoutView):
    next_page = reverse_lazy("console:login")
