"""Knowledge analytics for knowledge managers: the dashboard, the unanswered queue, per-entry usage."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.utils import timezone

from chat import selectors
from chat.models import Scope
from chat.views.access import console_view, render_console
from knowledge.cases.selectors import case_checks_recent, regression_cases_active
from knowledge.charts import evidence_rows, risk_coverage_svg
from knowledge.models import KnowledgeBase
from knowledge.selectors import knowledge_base_calibration_state
from rerank.heartbeat import rerank_running

WINDOWS = [(7, "7 days"), (30, "30 days"), (90, "90 days")]


def _window(request: HttpRequest, *, require_kb: bool = False) -> dict[str, Any]:
    try:
        days = int(request.GET.get("days", 30))
    except ValueError:
        days = 30
    days = days if days in dict(WINDOWS) else 30
    kbs = list(selectors.knowledge_bases())
    kb = next((candidate for candidate in kbs if candidate.slug == request.GET.get("kb")), None)
    if kb is None and require_kb and kbs:
        kb = kbs[0]
    # Whole days: "7 days" is today and the six before it.
    since = timezone.localtime().replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=days - 1)
    return {"days": days, "kb": kb, "kbs": kbs, "since": since, "windows": WINDOWS,
            "query": urlencode({"days": days, **({"kb": kb.slug} if kb else {})})}


def _rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _calibrations(kbs: list[KnowledgeBase]) -> list[dict[str, Any]]:
    """Per base: whether its decisions are calibrated for the reranker running now, and what it buys."""
    running = rerank_running()
    panels = []
    for kb in kbs:
        state = knowledge_base_calibration_state(kb=kb, running=running)
        calibration = state.calibration
        panels.append({
            "kb": kb, "state": state, "cal": calibration,
            "evidence": evidence_rows(calibration.evidence) if calibration else [],
            "chart": risk_coverage_svg(rows=calibration.risk_coverage, target=calibration.target_precision,
                                       threshold=calibration.answer_threshold) if calibration else "",
        })
    return panels


def _regression(kbs: list[KnowledgeBase], since: datetime) -> list[dict[str, Any]]:
    """Per base: its cases, and its checks in the window (pass rate after each, oldest first)."""
    panels = []
    for kb in kbs:
        checks = list(case_checks_recent(kb=kb, since=since))[::-1]
        panels.append({"kb": kb, "cases": regression_cases_active(kb=kb).count(), "checks": checks[-20:],
                       "pass_rates": [_rate(check.passed_after, check.cases) for check in checks],
                       "latest": checks[-1] if checks else None})
    return [panel for panel in panels if panel["cases"] or panel["checks"]]


@console_view(Scope.ANALYTICS)
def dashboard(request: HttpRequest) -> HttpResponse:
    window = _window(request)
    kb: KnowledgeBase | None = window["kb"]
    since: datetime = window["since"]
    daily = selectors.asks_daily(kb=kb, since=since)
    summary = selectors.asks_summary(kb=kb, since=since)
    charts = {
        "labels": [row["day"].isoformat() for row in daily],
        "answer": [row["answer"] for row in daily],
        "suggest": [row["suggest"] for row in daily],
        "handoff": [row["handoff"] for row in daily],
        "hit_rate": [row["hit_rate"] for row in daily],
        "degraded_rate": [row["degraded_rate"] for row in daily],
        "p50": [row["p50"] for row in daily],
        "p95": [row["p95"] for row in daily],
        "mix": [summary["answer"], summary["suggest"], summary["handoff"]],
    }
    return render_console(request, "chat/console/insights.html", {
        **window, "summary": summary, "charts": charts, "section": "dashboard",
        "answer_rate": _rate(summary["answer"], summary["total"]),
        "top": selectors.top_questions(kb=kb, since=since),
        "queue_size": len(selectors.unanswered_queue(kb=kb, since=since, merge_similar=False)),
        "calibrations": _calibrations([kb] if kb else window["kbs"]),
        "regression": _regression([kb] if kb else window["kbs"], since),
    })


def faq_add_url(group: selectors.QueueGroup) -> str:
    """The admin's add form, pre-filled (the admin reads initial values from the query string)."""
    # case_question: the new entry gets the queued question as its regression case.
    query = urlencode({"question": group.text, "kb": group.kb.pk, "language": group.language,
                       "case_question": group.text})
    return f"{reverse('admin:knowledge_faqentry_add')}?{query}"


@console_view(Scope.ANALYTICS)
def queue(request: HttpRequest) -> HttpResponse:
    window = _window(request)
    include_answered = request.GET.get("answered") == "1"
    groups = selectors.unanswered_queue(kb=window["kb"], since=window["since"], include_answered=include_answered)
    return render_console(request, "chat/console/insights_queue.html", {
        **window, "section": "queue", "include_answered": include_answered,
        # Counters are dicts: a template's ``.items`` would look up the key "items" (0), so pass pairs.
        "groups": [{"group": group, "add_url": faq_add_url(group), "decisions": sorted(group.decisions.items()),
                    "wordings": [text for text, _ in group.wordings.most_common(4) if text != group.text][:3]}
                   for group in groups],
        "can_add": request.user.has_perm("knowledge.add_faqentry"),
    })


@console_view(Scope.ANALYTICS)
def entries(request: HttpRequest) -> HttpResponse:
    window = _window(request, require_kb=True)
    usage = selectors.entry_usage(kb=window["kb"], since=window["since"]) if window["kb"] else []
    used = sorted((row for row in usage if row.used), key=lambda row: (-row.top, -row.chosen, row.entry.pk))
    return render_console(request, "chat/console/insights_entries.html", {
        **window, "section": "entries", "used": used, "unused": [row for row in usage if not row.used],
        "can_change": request.user.has_perm("knowledge.change_faqentry"),
    })
