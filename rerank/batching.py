"""Micro-batching inside the rerank worker.

The rerank worker runs a thread pool (one Celery task per execution slot, prefetch 1). Each task
hands its (query, documents) to the process-wide batcher and waits; the batcher's single engine
thread takes every request that arrives within ``max_wait`` of the first and scores them in ONE
engine call, so GPU throughput grows with load while an idle worker adds only a few milliseconds.
The engine is touched by that one thread only, which is what vLLM and PyTorch want.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rerank.engines.base import RerankEngine

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RerankRequest:
    query: str
    documents: list[str]
    instruction: str | None = None

    @property
    def characters(self) -> int:
        """What the engine reads: the query once per document it is paired with, and every document."""
        return len(self.query) * len(self.documents) + sum(map(len, self.documents))


@dataclass(frozen=True)
class Scored:
    scores: list[float]
    batch_requests: int  # how many requests shared the engine call that scored this one


@dataclass
class _Pending:
    request: RerankRequest
    future: Future[Scored] = field(default_factory=Future)


@dataclass
class BatchStats:
    engine_calls: int = 0
    requests: int = 0
    largest_batch: int = 0


class MicroBatcher:
    def __init__(self, engine: RerankEngine, *, max_wait: float = 0.005, max_documents: int = 512) -> None:
        self.engine = engine
        self.max_wait = max_wait
        self.max_documents = max_documents
        self.stats = BatchStats()
        self._queue: queue.Queue[_Pending] = queue.Queue()
        threading.Thread(target=self._run, name="rerank-engine", daemon=True).start()

    def score_many(self, requests: list[RerankRequest]) -> list[Scored]:
        """Queue every request at once (so they can share an engine call), then wait for all."""
        pendings = [_Pending(request) for request in requests]
        for pending in pendings:
            self._queue.put(pending)
        return [pending.future.result() for pending in pendings]

    def _collect(self) -> list[_Pending]:
        batch = [self._queue.get()]
        documents = len(batch[0].request.documents)
        deadline = time.monotonic() + self.max_wait
        while documents < self.max_documents:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                pending = self._queue.get(timeout=remaining)
            except queue.Empty:
                break
            batch.append(pending)
            documents += len(pending.request.documents)
        return batch

    def _run(self) -> None:
        while True:
            batch = self._collect()
            try:
                results = self.engine.score_batch([(p.request.query, p.request.documents, p.request.instruction)
                                                   for p in batch])
            except Exception as exc:  # every waiting task gets the error; the engine thread lives on
                logger.exception("rerank engine call failed")
                for pending in batch:
                    pending.future.set_exception(exc)
                continue
            self.stats.engine_calls += 1
            self.stats.requests += len(batch)
            self.stats.largest_batch = max(self.stats.largest_batch, len(batch))
            for pending, scores in zip(batch, results, strict=True):
                pending.future.set_result(Scored(scores=scores, batch_requests=len(batch)))
