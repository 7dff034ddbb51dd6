"""HTTP client of a ``vllm serve <Qwen3-Reranker> --runner pooling --hf-overrides ...`` endpoint.

The prompt is formatted here, split between query and document exactly as for the in-process
engine; the server must run *without* ``--chat-template`` or the prompt is wrapped twice.
Documents are cut here too (the server's ``truncate_prompt_tokens`` would cut the suffix), which
needs the model's tokenizer files on this side.
"""

from __future__ import annotations

import time
from typing import Any, Literal

import httpx

from rerank.engines.base import DEFAULT_MAX_TOKENS, Prompt, PromptFitter, Qwen3Engine

Endpoint = Literal["score", "rerank"]
# Worth another try: the server is restarting, overloaded or briefly unreachable.
_RETRY_STATUS = {429, 502, 503, 504}


class RerankServerError(RuntimeError):
    """The rerank server could not give scores; callers fall back to recall order."""


class VllmServerEngine(Qwen3Engine):
    name = "vllm-server"

    def __init__(
        self,
        url: str,
        model: str,
        *,
        tokenizer: str | None = None,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        timeout: float = 5.0,
        retries: int = 2,
        endpoint: Endpoint = "score",
        api_key: str | None = None,
        max_connections: int = 16,
    ) -> None:
        """``model`` is the served model name; ``tokenizer`` (default ``model``) a local path or
        hub id of the same tokenizer, used only to count tokens for truncation."""
        from transformers import AutoTokenizer

        if not url:
            raise ValueError("vllm-server engine needs the server URL (KB_RERANK_URL)")
        self.model = model
        self.url = url.rstrip("/")
        self.retries = retries
        self.endpoint: Endpoint = endpoint
        self._fitter = PromptFitter(AutoTokenizer.from_pretrained(tokenizer or model), max_tokens)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        # One pooled client per engine (per process): keep-alive connections, bounded pool.
        self._client = httpx.Client(
            base_url=self.url,
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 2.0)),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
        )

    def close(self) -> None:
        self._client.close()

    def _score_prompts(self, prompts: list[Prompt]) -> list[float]:
        if self.endpoint == "rerank":
            return self._rerank(prompts)
        query_parts = list(dict.fromkeys(prompt.query_part for prompt in prompts))
        # One query part is sent once; a micro-batch of several questions goes as N -> N pairs.
        queries: str | list[str] = query_parts[0] if len(query_parts) == 1 else [p.query_part for p in prompts]
        body = {"model": self.model, "queries": queries, "documents": [p.document_part for p in prompts]}
        rows = self._post("/score", body)["data"]
        return self._in_order([(row["index"], row["score"]) for row in rows], len(prompts))

    def _rerank(self, prompts: list[Prompt]) -> list[float]:
        # /v1/rerank takes one query per call.
        groups: dict[str, list[int]] = {}
        for index, prompt in enumerate(prompts):
            groups.setdefault(prompt.query_part, []).append(index)
        scores = [0.0] * len(prompts)
        for query_part, indexes in groups.items():
            documents = [prompts[i].document_part for i in indexes]
            body = {"model": self.model, "query": query_part, "documents": documents, "top_n": len(documents)}
            rows = self._post("/v1/rerank", body)["results"]
            # Results come sorted by relevance: each goes back to its document's index.
            in_group = self._in_order([(row["index"], row["relevance_score"]) for row in rows], len(indexes))
            for index, score in zip(indexes, in_group, strict=True):
                scores[index] = score
        return scores

    def _in_order(self, pairs: list[tuple[int, float]], count: int) -> list[float]:
        scores: list[float | None] = [None] * count
        for index, score in pairs:
            scores[index] = float(score)
        if any(score is None for score in scores):
            raise RerankServerError(f"{self.url}: {len(pairs)} scores for {count} documents")
        return [score for score in scores if score is not None]

    def _post(self, path: str, body: dict[str, Any]) -> Any:
        last_error: Exception | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(min(0.2 * 2 ** (attempt - 1), 2.0))
            try:
                response = self._client.post(path, json=body)
            except httpx.TransportError as exc:  # connect/read timeouts, refused, reset
                last_error = exc
                continue
            if response.status_code in _RETRY_STATUS:
                last_error = RerankServerError(f"{self.url}{path}: HTTP {response.status_code}")
                continue
            if response.is_error:
                # A 4xx is our request's fault (or a model name mismatch): retrying will not help.
                raise RerankServerError(f"{self.url}{path}: HTTP {response.status_code}: {response.text[:500]}")
            return response.json()
        raise RerankServerError(f"{self.url}{path}: gave up after {self.retries + 1} attempts: {last_error}")
