"""The caller's side of reranking: send requests to the rerank worker and wait, within a deadline."""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import redis
from celery.canvas import Signature
from celery.exceptions import TimeoutError as CeleryTimeoutError
from celery.result import AsyncResult
from django.conf import settings

from kbservice.celery import celery_queue_lengths
from kbservice.metrics.recording import record_rerank
from rerank.batching import RerankRequest
from rerank.heartbeat import rerank_workers_alive
from rerank.tasks import rerank_score_task

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RerankOutcome:
    """Scores per request in input order, or ``status="unavailable"`` with the reason.

    "unavailable" is a normal result, not an exception: the caller answers without reranking
    and says so, rather than failing the customer's question."""

    status: Literal["ok", "unavailable"]
    scores: list[list[float]] = field(default_factory=list)
    engine: str = ""
    model: str = ""
    reorders_in: frozenset[str] | None = None  # languages the engine's order is trusted in; None: all
    task_id: str = ""
    reason: str = ""
    batch_requests: int = 0  # requests that shared the engine call (micro-batching at work)
    total_tokens: int = 0

    def reorders(self, language: str) -> bool:
        """Whether candidates in ``language`` go in the order of these scores (else recall's)."""
        return self.status == "ok" and (self.reorders_in is None or language in self.reorders_in)


# Clock skew between the caller's and the worker's hosts that an expiry tolerates.
EXPIRY_MARGIN_SECONDS = 2.0
# How often a caller that can do without scores looks at the workers' heartbeats.
WORKER_CHECK_SECONDS = 1.0


def size_problem(requests: list[RerankRequest]) -> str | None:
    """Why one call with these requests is too much work to score in time, or None."""
    total = sum(request.characters for request in requests)
    if total <= settings.KB_RERANK_MAX_REQUEST_CHARS:
        return None
    return (f"This asks to score {total:,} characters (each query counted once per document); the limit is "
            f"{settings.KB_RERANK_MAX_REQUEST_CHARS:,} (KB_RERANK_MAX_REQUEST_CHARS, sized to the "
            f"{settings.KB_RERANK_BACKEND} engine). Split it into several calls.")


def rerank_submit(*, requests: list[RerankRequest], link: Signature | None = None,
                  expires: float | None = None) -> AsyncResult:
    """Queue a rerank task; a worker drops it unrun once ``expires`` seconds (default
    KB_RERANK_EXPIRES) have passed."""
    payload = [{"query": r.query, "documents": r.documents, "instruction": r.instruction} for r in requests]
    return rerank_score_task.apply_async(
        kwargs={"requests": payload}, queue=settings.KB_RERANK_QUEUE, link=link,
        expires=settings.KB_RERANK_EXPIRES if expires is None else expires,
    )


def rerank_score(
    *, requests: list[RerankRequest], timeout: float | None = None, link: Signature | None = None,
    max_backlog: int = 0, degrade_without_workers: bool = False,
) -> RerankOutcome:
    """Rerank through the worker; past ``timeout`` (default KB_RERANK_TIMEOUT) give up waiting.

    The task is not revoked on timeout: with ``link`` its late result still reaches whoever
    asked for it (e.g. to update a stored answer). A caller that can do without scores does not
    hold its web thread for a rerank that can only time out: with ``max_backlog`` it does not queue
    behind that many waiting requests (reason "backlog"); with ``degrade_without_workers`` it does
    not queue when no rerank worker is ready, and stops waiting when the last one goes (reason
    "no_worker"), so a killed worker does not pile asks up in the web while it restarts."""
    started = time.perf_counter()
    outcome = (_backlogged(max_backlog) or (_no_worker() if degrade_without_workers else None)
               or _rerank_round_trip(requests=requests, timeout=timeout, link=link,
                                     degrade_without_workers=degrade_without_workers))
    record_rerank(outcome=outcome.status if outcome.status == "ok" else outcome.reason,
                  seconds=time.perf_counter() - started)
    return outcome


def _backlogged(max_backlog: int) -> RerankOutcome | None:
    if max_backlog <= 0:
        return None
    try:
        waiting = celery_queue_lengths([settings.KB_RERANK_QUEUE])[settings.KB_RERANK_QUEUE]
    except Exception as exc:  # broker unreachable: the submit would fail too, so don't try it
        logger.warning("rerank queue unreadable: %s", exc)
        return RerankOutcome(status="unavailable", reason="broker_unavailable")
    if waiting < max_backlog:
        return None
    return RerankOutcome(status="unavailable", reason="backlog")


_workers_ready_at: dict[str, tuple[float, bool]] = {}


def _workers_ready() -> bool:
    """Whether a rerank worker on this process's queue is ready, as its heartbeats said at most
    WORKER_CHECK_SECONDS ago (one look per process and second, not per ask: it scans Redis keys).
    True when Redis cannot tell: the broker's own failure is reported where the task is sent."""
    queue = settings.KB_RERANK_QUEUE
    now = time.monotonic()
    looked_at, ready = _workers_ready_at.get(queue, (-WORKER_CHECK_SECONDS, True))
    if now - looked_at >= WORKER_CHECK_SECONDS:
        try:
            ready = bool(rerank_workers_alive())
        except redis.RedisError:
            ready = True
        _workers_ready_at[queue] = (now, ready)
    return ready


def _no_worker() -> RerankOutcome | None:
    return None if _workers_ready() else RerankOutcome(status="unavailable", reason="no_worker")


def _wait_for_result(result: AsyncResult, *, wait: float, degrade_without_workers: bool) -> dict[str, Any] | str:
    """The task's value, or why we stopped waiting ("timeout", "no_worker")."""
    deadline = time.monotonic() + wait
    while True:
        remaining = deadline - time.monotonic()
        try:
            value: dict[str, Any] = result.get(
                timeout=min(remaining, WORKER_CHECK_SECONDS) if degrade_without_workers else remaining,
                propagate=True, disable_sync_subtasks=False)
            return value
        except CeleryTimeoutError:
            if time.monotonic() >= deadline:
                return "timeout"
            if degrade_without_workers and not _workers_ready():
                return "no_worker"


def _rerank_round_trip(
    *, requests: list[RerankRequest], timeout: float | None, link: Signature | None, degrade_without_workers: bool,
) -> RerankOutcome:
    wait = settings.KB_RERANK_TIMEOUT if timeout is None else timeout
    # Without a link nobody wants the result once we stop waiting. Expiring then lets a worker that
    # comes back to a backlog (after a crash or a broker outage) drop it instead of scoring stale
    # requests ahead of live ones.
    expires = None if link is not None else wait + EXPIRY_MARGIN_SECONDS
    try:
        result = rerank_submit(requests=requests, link=link, expires=expires)
    except Exception as exc:  # broker unreachable: degrade, never fail the question
        logger.warning("rerank not queued: %s", exc)
        return RerankOutcome(status="unavailable", reason="broker_unavailable")
    try:
        value = _wait_for_result(result, wait=wait, degrade_without_workers=degrade_without_workers)
    except Exception as exc:  # the engine failed, or the result backend went away
        logger.warning("rerank failed: %s", exc)
        return RerankOutcome(status="unavailable", task_id=result.id, reason="error")
    if isinstance(value, str):
        return RerankOutcome(status="unavailable", task_id=result.id, reason=value)
    with contextlib.suppress(Exception):
        result.forget()  # the caller has it; don't keep it in Redis for CELERY_RESULT_EXPIRES
    reorders_in = value.get("reorders_in")  # absent from a worker of an older release: it reorders
    return RerankOutcome(status="ok", scores=value["scores"], engine=value["engine"], model=value["model"],
                         reorders_in=None if reorders_in is None else frozenset(reorders_in), task_id=result.id,
                         batch_requests=value["batch_requests"], total_tokens=value["total_tokens"])
