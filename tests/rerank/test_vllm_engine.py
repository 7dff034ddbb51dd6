"""vLLM in process (pooling runner, Qwen3 overrides) gives the transformers engine's scores.

One engine for the whole module: building it costs ~35 s on 2 CPUs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from rerank.engines.base import WEB_SEARCH_INSTRUCTION
from rerank.engines.transformers_engine import TransformersEngine
from rerank.engines.vllm_engine import VllmEngine

# Deprecations inside vLLM and torch, not ours.
pytestmark = [
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]

MAX_TOKENS = 512
QUERY = "How do I reset my password?"
DOCUMENTS = [
    "Open Settings, choose Account, then Reset password.",
    "Refunds are paid back to the original card within five working days.",
    "如何修改密码？打开设置，选择账户，然后点击重置密码。",
    "x",
    "Open Settings, choose Account, then Reset password.",
    # Longer than MAX_TOKENS: must be cut on the client, keeping the suffix.
    "You can delete your account from the privacy page; the data is removed after two weeks. " * 200,
]
# Small and explicit: on the CPU build these mean host memory, and the machine runs other things.
ENGINE_KWARGS: dict[str, Any] = {
    "dtype": "float32",
    "gpu_memory_utilization": 0.1,
    "kv_cache_memory_bytes": 256 * 2**20,
    "enforce_eager": True,
    "max_num_seqs": 16,
}


@pytest.fixture(scope="module")
def vllm_engine(tiny_qwen3: Path) -> VllmEngine:
    return VllmEngine(str(tiny_qwen3), max_tokens=MAX_TOKENS, **ENGINE_KWARGS)


@pytest.fixture(scope="module")
def transformers_engine(tiny_qwen3: Path) -> TransformersEngine:
    return TransformersEngine(str(tiny_qwen3), max_tokens=MAX_TOKENS)


def test_in_process_engine_runs_without_children(vllm_engine: VllmEngine) -> None:
    # A Celery prefork child cannot start processes: vLLM must not have spawned an engine core.
    assert os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"
    import multiprocessing

    assert multiprocessing.active_children() == []


def test_scores_equal_the_transformers_engine(vllm_engine: VllmEngine, transformers_engine: TransformersEngine) -> None:
    for instruction in (None, WEB_SEARCH_INSTRUCTION):
        expected = transformers_engine.score(QUERY, DOCUMENTS, instruction=instruction)

        scores = vllm_engine.score(QUERY, DOCUMENTS, instruction=instruction)

        assert scores == pytest.approx(expected, abs=1e-4)
        assert scores[0] == scores[4]
        assert max(scores) - min(scores) > 0.05


def test_a_micro_batch_is_scored_as_pairs(vllm_engine: VllmEngine, transformers_engine: TransformersEngine) -> None:
    requests = [(QUERY, DOCUMENTS[:3], None), ("退款多久到账？", DOCUMENTS[1:4], WEB_SEARCH_INSTRUCTION)]

    scores = vllm_engine.score_batch(requests)

    assert scores == [pytest.approx(row, abs=1e-4) for row in transformers_engine.score_batch(requests)]
