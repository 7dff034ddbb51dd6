"""What runs inside the rerank worker process: the engine, loaded once, behind the micro-batcher."""

from __future__ import annotations

import threading
from typing import Any

from django.conf import settings

from rerank.batching import MicroBatcher, RerankRequest

_lock = threading.Lock()
_batcher: MicroBatcher | None = None


def get_batcher() -> MicroBatcher:
    from rerank.engines import get_engine  # heavy (torch/vLLM): imported only where the engine runs

    global _batcher
    with _lock:  # threads of the pool race for the first load; the model must load once
        if _batcher is None:
            _batcher = MicroBatcher(get_engine(), max_wait=settings.KB_RERANK_BATCH_WAIT_MS / 1000)
        return _batcher


def rerank_requests(*, requests: list[dict[str, Any]]) -> dict[str, Any]:
    batcher = get_batcher()
    results = batcher.score_many(
        [RerankRequest(query=r["query"], documents=list(r["documents"]), instruction=r.get("instruction"))
         for r in requests]
    )
    engine = batcher.engine
    # Counted here, where the tokenizer lives; tokenizing is cheap next to scoring.
    tokens = sum(engine.count_tokens(r["query"], list(r["documents"]), instruction=r.get("instruction"))
                 for r in requests)
    reorders_in = None if engine.reorders_in is None else sorted(engine.reorders_in)
    return {"engine": engine.name, "model": engine.model, "reorders_in": reorders_in,
            "scores": [r.scores for r in results],
            "batch_requests": max(r.batch_requests for r in results), "total_tokens": tokens}
