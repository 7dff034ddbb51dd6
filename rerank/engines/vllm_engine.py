"""Qwen3-Reranker inside this process through vLLM's pooling runner (the GPU rerank worker).

vLLM turns the causal LM into a one-logit classifier from ``W[yes] - W[no]`` with a sigmoid,
which is exactly ``exp(log_softmax([no, yes])[1])`` of the reference. It concatenates the query
string and each document string as they are, so the Qwen3 prompt is split between them
(``query_part`` / ``document_part``) and no chat template is given.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from rerank.engines.base import DEFAULT_MAX_TOKENS, Prompt, PromptFitter, Qwen3Engine

# The key names and the token order are load-bearing: older names (is_qwen3_rerank) or
# ["yes", "no"] load without error and silently give wrong scores.
QWEN3_RERANKER_OVERRIDES: dict[str, Any] = {
    "architectures": ["Qwen3ForSequenceClassification"],
    "classifier_from_token": ["no", "yes"],
    "is_original_qwen3_reranker": True,
}

# Set before vLLM is imported (and read again when an engine is built): the engine core would
# otherwise run in a child process, and a Celery prefork child is daemonic and may not have any.
os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"

_llms: dict[tuple[Any, ...], Any] = {}
_llms_lock = threading.Lock()


def load_llm(model: str, *, max_tokens: int, **engine_kwargs: Any) -> Any:
    """One ``vllm.LLM`` per model and settings per process: loading takes seconds to minutes."""
    key = (model, max_tokens, tuple(sorted(engine_kwargs.items())))
    with _llms_lock:
        if key not in _llms:
            import vllm

            _llms[key] = vllm.LLM(
                model=model,
                runner="pooling",
                hf_overrides=QWEN3_RERANKER_OVERRIDES,
                max_model_len=max_tokens,
                **engine_kwargs,
            )
        return _llms[key]


class VllmEngine(Qwen3Engine):
    name = "vllm"

    def __init__(self, model: str, *, max_tokens: int = DEFAULT_MAX_TOKENS, **engine_kwargs: Any) -> None:
        """``engine_kwargs`` go to ``vllm.LLM`` (dtype, gpu_memory_utilization, ...)."""
        self.model = model
        self._llm = load_llm(model, max_tokens=max_tokens, **engine_kwargs)
        # The same tokenizer vLLM uses; documents are cut here because vLLM's own truncation
        # (truncate_prompt_tokens) cuts the end of the prompt, i.e. the suffix.
        self._fitter = PromptFitter(self._llm.get_tokenizer(), max_tokens)
        # vllm.LLM is not thread-safe; a threaded worker serialises calls (vLLM batches inside).
        self._lock = threading.Lock()

    def _score_prompts(self, prompts: list[Prompt]) -> list[float]:
        # N -> N pairs: one call scores every request of a micro-batch; vLLM schedules the batch.
        with self._lock:
            outputs = self._llm.score(
                [prompt.query_part for prompt in prompts],
                [prompt.document_part for prompt in prompts],
                use_tqdm=False,
            )
        return [float(output.outputs.score) for output in outputs]
