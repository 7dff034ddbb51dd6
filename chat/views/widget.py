"""The embeddable chat widget's script and the demo page that shows it."""

from __future__ import annotations

from django.conf import settings
from django.contrib.staticfiles import finders
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from chat.services.demo_access import demo_widget_key_read

WIDGET_SCRIPT = "chat/widget/widget.js"
MAX_QUESTION_LINE = "var MAX_QUESTION = 2000;"


@require_GET
def widget_js(request: HttpRequest) -> HttpResponse:
    """``/widget.js`` at a stable address for ``<script src>`` tags on customers' sites.

    Served by a view rather than from /static/ so the address never changes with a release and
    so other sites may load it (a cross-origin script tag needs no CORS, but a site that adds
    ``crossorigin`` or sends Cross-Origin-Embedder-Policy does)."""
    path = finders.find(WIDGET_SCRIPT)
    if not path:
        raise Http404("widget script missing")
    with open(path, encoding="utf-8") as handle:  # type: ignore[arg-type]
        script = handle.read()
    # The widget says "too long" before sending, by the limit this server applies.
    script = script.replace(MAX_QUESTION_LINE, f"var MAX_QUESTION = {settings.KB_MAX_QUESTION_CHARS:d};", 1)
    response = HttpResponse(script, content_type="text/javascript; charset=utf-8")
    response["Cache-Control"] = "public, max-age=300"
    response["Access-Control-Allow-Origin"] = "*"
    response["Cross-Origin-Resource-Policy"] = "cross-origin"
    return response


@require_GET
def demo(request: HttpRequest) -> HttpResponse:
    """A pretend shop page with the widget on the demo knowledge base (key from kb_setup_demo_access).

    The page is Chinese unless ``?lang=en``: the widget speaks the host page's language."""
    lang = "en" if request.GET.get("lang") == "en" else "zh-CN"
    return render(request, "chat/demo/index.html", {"widget_key": demo_widget_key_read(), "kb": "demo", "lang": lang})
