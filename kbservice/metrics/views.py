"""``GET /metrics``: Prometheus text (or OpenMetrics, if asked for) for the scraper.

Who may scrape: with ``KB_METRICS_TOKEN`` set, whoever sends ``Authorization: Bearer <token>``;
without it, only direct requests from loopback or private addresses."""

from __future__ import annotations

import hmac
import ipaddress

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.cache import never_cache
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from kbservice.api.errors import json_error
from kbservice.metrics.collector import SharedMetricsCollector

REGISTRY = CollectorRegistry(auto_describe=False)
REGISTRY.register(SharedMetricsCollector())

# A request relayed by a proxy arrives from the proxy's (private) address, whoever sent it.
PROXY_HEADERS = ("X-Forwarded-For", "Forwarded", "X-Real-Ip")


def _from_private_network(request: HttpRequest) -> bool:
    if any(header in request.headers for header in PROXY_HEADERS):
        return False
    try:
        address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_private or address.is_loopback


def _refusal(request: HttpRequest) -> HttpResponse | None:
    token = settings.KB_METRICS_TOKEN
    if token:
        sent = request.headers.get("Authorization", "").encode()
        if hmac.compare_digest(sent, f"Bearer {token}".encode()):
            return None
        response = json_error(request, status_code=401, code="not_authenticated",
                              message="Send Authorization: Bearer <KB_METRICS_TOKEN>.")
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    if _from_private_network(request):
        return None
    return json_error(request, status_code=403, code="permission_denied",
                      message="Without KB_METRICS_TOKEN, /metrics answers only direct requests from private addresses.")


@never_cache
def metrics(request: HttpRequest) -> HttpResponse:
    if request.method not in ("GET", "HEAD"):
        return json_error(request, status_code=405, code="method_not_allowed", message="Use GET.")
    refusal = _refusal(request)
    if refusal is not None:
        return refusal
    encode, content_type = choose_encoder(request.headers.get("Accept", ""))
    return HttpResponse(encode(REGISTRY), content_type=content_type)
