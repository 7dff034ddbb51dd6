"""The rerank workbench: one query against a knowledge base (through the production ask path) or
against pasted documents (straight to the rerank worker), kept as a ``WorkbenchRun``."""

from __future__ import annotations

import csv
import io
import re
import time
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError

from chat.highlight import highlight
from chat.models import Ticket, WorkbenchRun
from chat.services.ask import AskParams, ask, question_clean
from chat.services.tickets import ticket_resolve
from knowledge.embedding import default_model_name
from knowledge.models import KnowledgeBase
from rerank.batching import RerankRequest
from rerank.services import rerank_score, size_problem

SPLITS = {
    "auto": "Detect",
    "dashes": "Lines of ---",
    "blank": "Blank lines",
    "lines": "One per line",
    "spreadsheet": "Spreadsheet cells (tab-separated)",
}
KB_STAGES = ["vector", "keyword", "fused", "rerank"]
DOCUMENT_STAGES = ["rerank"]
# Gaps are looked for among the top results only: a drop at rank 30 says nothing about the answer.
GAP_WINDOW = 10
_DASHES = re.compile(r"^[ \t]*-{3,}[ \t]*$", re.M)
_BLANK = re.compile(r"\n[ \t]*\n")


def _split_with(text: str, split: str) -> list[str]:
    if split == "dashes":
        parts = _DASHES.split(text)
    elif split == "blank":
        parts = _BLANK.split(text)
    elif split == "spreadsheet":
        # Spreadsheets put each row on a line and quote cells that hold line breaks or tabs.
        rows = csv.reader(io.StringIO(text), dialect="excel-tab")
        parts = ["\n".join(cell.strip() for cell in row if cell.strip()) for row in rows]
    else:
        parts = text.split("\n")
    return [part.strip() for part in parts if part.strip()]


def workbench_documents_split(*, text: str, split: str = "auto") -> tuple[list[str], str]:
    """The documents in pasted text, and the way they were told apart.

    Auto: lines of ``---`` if there are any; else tab-separated cells (a spreadsheet paste); else
    blank lines if there are any; else one document per line."""
    if split not in SPLITS:
        raise ValidationError({"split": [f"must be one of {', '.join(SPLITS)}"]})
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if split == "auto":
        if _DASHES.search(text):
            split = "dashes"
        elif "\t" in text or re.search(r'^"', text, re.M):
            split = "spreadsheet"
        elif _BLANK.search(text.strip()):
            split = "blank"
        else:
            split = "lines"
    return _split_with(text, split), split


def _largest_gap(scores: list[float | None]) -> dict[str, Any] | None:
    """The biggest drop between neighbouring ranks among the top ones: where "relevant" ends."""
    values = [score for score in scores[:GAP_WINDOW] if score is not None]
    if len(values) < 2:
        return None
    drops = [(values[index] - values[index + 1], index + 1) for index in range(len(values) - 1)]
    drop, after_rank = max(drops)
    return {"after_rank": after_rank, "drop": round(drop, 4)}


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)


def _kb_rows(response: dict[str, Any]) -> list[dict[str, Any]]:
    shown = [response["answer"], *response["alternatives"]] if response["answer"] else []
    # "Original index" = position in recall (fused order), what the reranker started from.
    recall_order = sorted(shown, key=lambda item: (-(item["scores"]["fused"] or 0), item["rank"]))
    recall_index = {item["id"]: index for index, item in enumerate(recall_order, start=1)}
    return [
        {
            "rank": item["rank"], "index": recall_index[item["id"]], "entry_id": item["id"],
            "external_id": item.get("external_id") or "",
            "title": item["question"], "text": item["answer"], "scores": item["scores"],
            "highlight_html": item["highlight"]["html"] if item["rank"] == 1 else "",
        }
        for item in shown
    ]


def _run_kb(*, kb: KnowledgeBase, query: str, instruction: str) -> dict[str, Any]:
    started = time.perf_counter()
    # Every candidate the reranker saw, not just the kb's top_n: the workbench is for looking at all of them.
    response = ask(kb=kb, params=AskParams(question=query, instruction=instruction, top_n=max(kb.rerank_k, 1)),
                   channel="workbench")
    total = _ms(started)
    # The ask path records a ticket; close it at once so experiments never wait in an inbox.
    ticket = Ticket.objects.filter(public_id=response["ticket"]).first()
    if ticket is not None:
        ticket_resolve(ticket=ticket)
    rows = _kb_rows(response)
    rerank = response["rerank"]
    return {
        "status": rerank["status"], "engine": rerank["engine"], "model": rerank["model"], "total_ms": total,
        "result": {
            "rows": rows, "stages": KB_STAGES, "decision": response["decision"], "cache": response["cache"],
            "thresholds": response["thresholds"], "timings_ms": {**response["timings_ms"], "workbench_total": total},
            "reason": rerank.get("reason", ""), "instruction": instruction or kb.rerank_instruction,
            "gap": _largest_gap([row["scores"]["rerank"] for row in rows]),
            "candidates": len(response["candidates"]),
        },
    }


def _run_documents(*, query: str, documents: list[str], instruction: str, split: str) -> dict[str, Any]:
    timings: dict[str, float] = {}
    started = time.perf_counter()
    outcome = rerank_score(requests=[RerankRequest(query=query, documents=documents, instruction=instruction or None)],
                           timeout=settings.KB_RERANK_API_TIMEOUT)
    timings["rerank"] = _ms(started)
    if outcome.status != "ok":
        return {"status": "unavailable", "engine": outcome.engine, "model": outcome.model, "total_ms": _ms(started),
                "result": {"rows": [], "stages": DOCUMENT_STAGES, "timings_ms": timings, "reason": outcome.reason,
                           "split": split, "gap": None}}
    scores = outcome.scores[0]
    order = sorted(range(len(documents)), key=lambda index: -scores[index])
    mark_started = time.perf_counter()
    top = highlight(question=query, text=documents[order[0]], embed_model=default_model_name())
    timings["highlight"] = _ms(mark_started)
    rows: list[dict[str, Any]] = [
        {"rank": rank, "index": index + 1, "entry_id": None, "title": "", "text": documents[index],
         "scores": {"rerank": scores[index]}, "highlight_html": top.html if rank == 1 else ""}
        for rank, index in enumerate(order, start=1)
    ]
    timings["total"] = _ms(started)
    return {
        "status": "ok", "engine": outcome.engine, "model": outcome.model, "total_ms": timings["total"],
        "result": {"rows": rows, "stages": DOCUMENT_STAGES, "timings_ms": timings, "split": split,
                   "gap": _largest_gap([row["scores"]["rerank"] for row in rows])},
    }


def workbench_run(*, mode: str, query: str, instruction: str = "", kb: KnowledgeBase | None = None,
                  documents_text: str = "", split: str = "auto", user: Any = None) -> WorkbenchRun:
    """Run one workbench query and record it. Raises ValidationError for input we cannot run."""
    errors: dict[str, list[str]] = {}
    try:
        query = question_clean(text=query)
    except ValidationError as error:
        errors["query"] = error.message_dict["question"]
    instruction = instruction.strip()
    if len(instruction) > 2000:
        errors["instruction"] = ["at most 2000 characters"]
    documents: list[str] = []
    if mode == WorkbenchRun.Mode.KB:
        if kb is None:
            errors["kb"] = ["choose a knowledge base"]
    elif mode == WorkbenchRun.Mode.DOCUMENTS:
        try:
            documents, split = workbench_documents_split(text=documents_text, split=split)
        except ValidationError as error:
            errors.update(error.message_dict)
        if not documents:
            errors.setdefault("documents", []).append("paste at least one document")
        elif len(documents) > settings.KB_RERANK_MAX_DOCUMENTS:
            errors.setdefault("documents", []).append(
                f"{len(documents)} documents; the limit is {settings.KB_RERANK_MAX_DOCUMENTS}")
        longest = max(map(len, documents), default=0)
        if longest > settings.KB_RERANK_MAX_DOCUMENT_CHARS:
            errors.setdefault("documents", []).append(
                f"a document has {longest} characters; the limit is {settings.KB_RERANK_MAX_DOCUMENT_CHARS}")
        if (problem := size_problem([RerankRequest(query=query, documents=documents)])) is not None:
            errors.setdefault("documents", []).append(problem)
    else:
        errors["mode"] = [f"must be one of {', '.join(WorkbenchRun.Mode.values)}"]
    if errors:
        raise ValidationError(errors)
    if mode == WorkbenchRun.Mode.KB:
        assert kb is not None
        outcome = _run_kb(kb=kb, query=query, instruction=instruction)
    else:
        outcome = _run_documents(query=query, documents=documents, instruction=instruction, split=split)
    return WorkbenchRun.objects.create(
        mode=mode, kb=kb if mode == WorkbenchRun.Mode.KB else None, query=query, instruction=instruction,
        documents=documents, created_by=user if getattr(user, "pk", None) else None, **outcome,
    )
