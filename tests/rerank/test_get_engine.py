"""get_engine() builds the engine named by the settings, once per process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured
from pytest_django.fixtures import Settings

from rerank.engines import get_engine, reset_engine
from rerank.engines.lite import LiteEngine
from rerank.engines.transformers_engine import TransformersEngine
from rerank.engines.vllm_server_engine import VllmServerEngine


@pytest.fixture(autouse=True)
def _fresh_engine() -> Iterator[None]:
    reset_engine()
    yield
    reset_engine()


def test_lite_is_the_default_and_built_once(settings: Settings) -> None:
    settings.KB_RERANK_BACKEND = "lite"

    engine = get_engine()

    assert isinstance(engine, LiteEngine)
    assert get_engine() is engine


def test_transformers_backend_loads_the_configured_model(settings: Settings, tiny_qwen3: Path) -> None:
    settings.KB_RERANK_BACKEND = "transformers"
    settings.KB_RERANK_MODEL = str(tiny_qwen3)
    settings.KB_RERANK_MAX_TOKENS = 300

    engine = get_engine()

    assert isinstance(engine, TransformersEngine)
    assert engine.name == "transformers" and engine.model == str(tiny_qwen3)
    assert engine._fitter.max_tokens == 300


def test_vllm_server_backend_needs_a_url(settings: Settings, tiny_qwen3: Path) -> None:
    settings.KB_RERANK_BACKEND = "vllm-server"
    settings.KB_RERANK_MODEL = str(tiny_qwen3)
    settings.KB_RERANK_URL = ""
    with pytest.raises(ImproperlyConfigured, match="KB_RERANK_URL"):
        get_engine()

    settings.KB_RERANK_URL = "http://127.0.0.1:9/"
    engine = get_engine()

    assert isinstance(engine, VllmServerEngine)
    assert engine.url == "http://127.0.0.1:9"
