"""The micro-batcher in front of the real transformers engine (tiny Qwen3): requests queued together
share one engine call, and an engine failure reaches every request of its call, never a made-up score."""

from __future__ import annotations

from pathlib import Path

import pytest

from rerank.batching import MicroBatcher, RerankRequest
from rerank.engines.transformers_engine import TransformersEngine

DOCUMENTS = ["Open Settings, choose Account, then Reset password.", "Refunds take five working days."]
# Longer than the engine's prompt: the engine refuses it (no room left for a document).
CROWDING_INSTRUCTION = "Judge carefully. " * 400


@pytest.fixture(scope="module")
def engine(tiny_qwen3: Path) -> TransformersEngine:
    return TransformersEngine(str(tiny_qwen3), max_tokens=256)


def test_requests_queued_together_share_one_engine_call(engine: TransformersEngine) -> None:
    # Collected until the 6 documents of the 3 requests queued at once are in: no wait on the clock.
    batcher = MicroBatcher(engine, max_wait=600.0, max_documents=6)
    requests = [RerankRequest(query=f"question {n}", documents=DOCUMENTS) for n in range(3)]

    results = batcher.score_many(requests)

    assert [result.batch_requests for result in results] == [3, 3, 3]
    assert (batcher.stats.engine_calls, batcher.stats.requests, batcher.stats.largest_batch) == (1, 3, 3)
    assert [result.scores for result in results] == [
        pytest.approx(engine.score(r.query, r.documents), abs=1e-6) for r in requests]


def test_an_engine_failure_reaches_every_request_of_its_call_and_the_batcher_lives_on(
    engine: TransformersEngine,
) -> None:
    batcher = MicroBatcher(engine, max_wait=0.0)
    with pytest.raises(ValueError, match="no room for a document"):
        batcher.score_many([RerankRequest(query="q", documents=DOCUMENTS, instruction=CROWDING_INSTRUCTION)])
    assert batcher.stats.engine_calls == 0  # the failed call scored nothing

    (after,) = batcher.score_many([RerankRequest(query="How do I reset my password?", documents=DOCUMENTS)])
    assert after.scores == pytest.approx(engine.score("How do I reset my password?", DOCUMENTS), abs=1e-6)
