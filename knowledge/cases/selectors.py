"""Reads of regression cases and of the checks that ran them."""

from __future__ import annotations

from datetime import datetime

from django.db.models import QuerySet

from knowledge.models import CaseCheck, KnowledgeBase, RegressionCase


def regression_cases_active(*, kb: KnowledgeBase) -> QuerySet[RegressionCase]:
    return RegressionCase.objects.filter(kb=kb, retired_at__isnull=True).select_related("entry").order_by("pk")


def case_checks_recent(*, kb: KnowledgeBase, since: datetime | None = None, limit: int = 200) -> QuerySet[CaseCheck]:
    """Finished checks and runs of ``kb``, newest first."""
    checks = CaseCheck.objects.filter(kb=kb, status=CaseCheck.Status.DONE).defer("results")
    return (checks.filter(created_at__gte=since) if since else checks)[:limit]



def regression_case_keys(*, kb_id: int) -> set[tuple[str, int | None]]:
    """(normalised question, entry) of the base's active cases: whether a question is already kept."""
    active = RegressionCase.objects.filter(kb_id=kb_id, retired_at__isnull=True)
    return set(active.values_list("normalized", "entry_id"))
