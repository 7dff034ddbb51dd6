from __future__ import annotations

from typing import Any

from celery import shared_task
from django.conf import settings

from rerank import worker


@shared_task(
    name="rerank.score",
    acks_late=True,
    reject_on_worker_lost=True,
    soft_time_limit=settings.KB_RERANK_TASK_SOFT_TIME_LIMIT,
    time_limit=settings.KB_RERANK_TASK_TIME_LIMIT,
)
def rerank_score_task(*, requests: list[dict[str, Any]]) -> dict[str, Any]:
    """Score one or more (query, documents) requests; results in input order.

    Idempotent (a pure function of its input), so redelivery after a lost worker is safe."""
    return worker.rerank_requests(requests=requests)
