"""Content-Security-Policy per page: the strict policy of ``settings.CONTENT_SECURITY_POLICY`` for
our own pages, and a looser one only where third-party templates we do not control need it."""

from __future__ import annotations

from csp.constants import SELF, UNSAFE_HASHES, UNSAFE_INLINE
from csp.middleware import CSPMiddleware, PolicyParts
from django.http import HttpRequest, HttpResponseBase

# django-import-export's export page toggles its field checkboxes with this one inline handler.
_IMPORT_EXPORT_TOGGLE_HANDLER = "'sha256-wid4zL8fR53ZYy1ljOepzR77Dn6vWUUxuNnnWWBP3I8='"  # onSelectToggleChange(event)

# Directives replaced below these paths. Scripts stay same-origin everywhere; only styles loosen:
# Django's admin, import-export and reversion-compare templates write inline <style> and style=""
# (and 'unsafe-inline' must not meet a nonce there, or browsers ignore it: replaced, not added to);
# Swagger UI has an inline <style> and draws its icons from data: URIs.
PATH_POLICIES: dict[str, dict[str, list[str]]] = {
    "/admin/": {
        "style-src": [SELF, UNSAFE_INLINE],
        "script-src": [SELF, UNSAFE_HASHES, _IMPORT_EXPORT_TOGGLE_HANDLER],
    },
    "/api/docs/": {"style-src": [SELF, UNSAFE_INLINE], "img-src": [SELF, "data:"]},
}


class ContentSecurityPolicyMiddleware(CSPMiddleware):
    """django-csp's middleware, with ``PATH_POLICIES`` for pages a view decorator cannot reach
    (the admin's URLs come from ``admin.site``)."""

    def get_policy_parts(
        self, request: HttpRequest, response: HttpResponseBase, report_only: bool = False,
    ) -> PolicyParts:
        parts = super().get_policy_parts(request, response, report_only)
        if parts.replace is None:
            parts.replace = next((policy for prefix, policy in PATH_POLICIES.items()
                                  if request.path_info.startswith(prefix)), None)
        return parts
