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

from rerank.engines.base import DEFAULT_MAX_TOKENS, PromptFitter, RerankEngine, document_part

Endpoint = Literal["score", "rerank"]
# Worth another try: the server is restarting, overloaded or briefly unreachable.
_RETRY_STATUS = {429, 502, 503, 504}


class RerankServerError(RuntimeError):
    """The rerank server could not give scores; callers fall back to recall order."""


class VllmServerEngine(RerankEngine):
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

    def _score_unique(self, query: str, documents: list[str], instruction: str) -> list[float]:
        fitted = self._fitter.fit(instruction, query, documents)
        texts = [document_part(document) for document in fitted.documents]
        if self.endpoint == "rerank":
            body = {"model": self.model, "query": fitted.query_part, "documents": texts, "top_n": len(texts)}
            rows = self._post("/v1/rerank", body)["results"]
            # /v1/rerank sorts by relevance: put each score back at its document's index.
            pairs = [(row["index"], row["relevance_score"]) for row in rows]
        else:
            body = {"model": self.model, "queries": fitted.query_part, "documents": texts}
            pairs = [(row["index"], row["score"]) for row in self._post("/score", body)["data"]]
        scores: list[float | None] = [None] * len(texts)
        for index, score in pairs:
            scores[index] = float(score)
        if any(score is None for score in scores):
            raise RerankServerError(f"{self.url}: {len(pairs)} scores for {len(texts)} documents")
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
