"""The rerank workbench: a form, a run page (cards, matrix, score-by-rank chart), CSV export, history."""

from __future__ import annotations

import csv
import io
from typing import Any

from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import reverse

from chat import selectors
from chat.models import Scope, WorkbenchRun
from chat.services.workbench import SPLITS, workbench_run
from chat.views.access import console_view, render_console
from knowledge.models import KnowledgeBase

STAGE_LABELS = {"vector": "Vector", "keyword": "Keyword", "fused": "Fused", "rerank": "Rerank"}


def _form_values(source: Any, run: WorkbenchRun | None = None) -> dict[str, Any]:
    if run is not None:
        return {"mode": run.mode, "kb": run.kb.slug if run.kb else "", "query": run.query,
                "instruction": run.instruction, "documents": "\n---\n".join(run.documents), "split": "dashes"}
    return {"mode": source.get("mode", WorkbenchRun.Mode.KB), "kb": source.get("kb", ""),
            "query": source.get("query", ""), "instruction": source.get("instruction", ""),
            "documents": source.get("documents", ""), "split": source.get("split", "auto")}


def _page(request: HttpRequest, *, form: dict[str, Any], run: WorkbenchRun | None = None,
          errors: dict[str, list[str]] | None = None, status: int = 200) -> HttpResponse:
    return render_console(request, "chat/console/workbench.html", {
        "form": form, "errors": errors or {}, "run": run, "view": _run_view(run) if run else None,
        "kbs": selectors.knowledge_bases(), "splits": SPLITS.items(), "modes": WorkbenchRun.Mode.choices,
        "history": selectors.workbench_runs_recent(user=request.user),
    }, status=status)


@console_view(Scope.RERANK)
def workbench(request: HttpRequest) -> HttpResponse:
    if request.method != "POST":
        again = request.GET.get("from")
        run = WorkbenchRun.objects.filter(pk=again).first() if again and again.isdigit() else None
        return _page(request, form=_form_values(request.GET, run))
    form = _form_values(request.POST)
    kb = KnowledgeBase.objects.filter(slug=form["kb"]).first() if form["kb"] else None
    try:
        run = workbench_run(mode=form["mode"], query=form["query"], instruction=form["instruction"], kb=kb,
                            documents_text=form["documents"], split=form["split"], user=request.user)
    except ValidationError as error:
        return _page(request, form=form, errors=error.message_dict, status=400)
    return HttpResponseRedirect(reverse("console:workbench-run", args=[run.pk]), status=303)


def _run(pk: int) -> WorkbenchRun:
    # A run's link can be shared with anyone who may use the workbench; history lists one's own.
    return get_object_or_404(WorkbenchRun.objects.select_related("kb", "created_by"), pk=pk)


def _cell(text: str) -> str:
    """Defuse spreadsheet formulas: a pasted document starting with = or @ must stay text in Excel."""
    return "'" + text if text[:1] in ("=", "+", "@", "\t", "\r") or (text[:1] == "-" and text[1:2].isalpha()) else text


@console_view(Scope.RERANK)
def run_detail(request: HttpRequest, pk: int) -> HttpResponse:
    run = _run(pk)
    return _page(request, form=_form_values(request.GET, run), run=run)


def _run_view(run: WorkbenchRun) -> dict[str, Any]:
    """What the run page draws, derived from the stored result."""
    result = run.result
    rows = result.get("rows", [])
    stages = result.get("stages", [])
    gap = result.get("gap")
    chart = {
        "labels": [f"#{row['rank']}" for row in rows],
        "scores": [row["scores"].get("rerank") for row in rows],
        "fused": [row["scores"].get("fused") for row in rows] if "fused" in stages else None,
        "gap_after": gap["after_rank"] if gap else None,
        "thresholds": result.get("thresholds"),
    }
    return {
        "rows": rows, "top": rows[0] if rows else None, "cards": rows[:10], "stages": stages,
        "stage_labels": [(stage, STAGE_LABELS.get(stage, stage)) for stage in stages],
        "timings": sorted(result.get("timings_ms", {}).items()), "gap": gap, "chart": chart,
    }


@console_view(Scope.RERANK)
def run_csv(request: HttpRequest, pk: int) -> HttpResponse:
    """The data matrix as CSV: UTF-8 with a BOM, so Excel opens Chinese text correctly."""
    run = _run(pk)
    stages = run.result.get("stages", [])
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["rank", "original_index", *[f"{stage}_score" for stage in stages], "entry_id", "external_id",
                     "title", "text"])
    for row in run.result.get("rows", []):
        scores = [row["scores"].get(stage) for stage in stages]
        writer.writerow([row["rank"], row["index"], *["" if score is None else f"{score:.6f}" for score in scores],
                         row.get("entry_id") or "", _cell(row.get("external_id") or ""), _cell(row.get("title", "")),
                         _cell(row["text"])])
    response = HttpResponse("\ufeff" + buffer.getvalue(), content_type="text/csv; charset=utf-8")
    # Named by the run: a Chinese query has no ASCII words to name it by.
    response["Content-Disposition"] = f'attachment; filename="workbench-run-{run.pk}.csv"'
    return response
