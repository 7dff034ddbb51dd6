"""get_engine() builds the engine named by the settings, once per process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured
from pytest_django.fixtures import Settings

from kbservice.embedded import BASE_DIR
from rerank.engines import get_engine, reset_engine
from rerank.engines.lite import LiteEngine
from rerank.engines.transformers_engine import TransformersEngine
from rerank.engines.vllm_server_engine import VllmServerEngine

QUERY = "How do I reset my password?"
DOCUMENT = "Open Settings, choose Account, then Reset password."


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


def test_vllm_backend_builds_the_in_process_vllm_engine_on_the_configured_model(tiny_qwen3: Path) -> None:
    """Built in a process of its own: an in-process vLLM engine is process-wide state (its own LLM
    cache, its kernel registrations), which must not leak into the engines other tests build here.
    KB_VLLM_ENGINE_ARGS reaches vllm.LLM (here: no torch.compile, which costs this test 30-60 s)."""
    script = (
        "import json, django; django.setup()\n"
        "from rerank.engines import get_engine\n"
        "engine = get_engine()\n"
        "print(json.dumps({'class': type(engine).__name__, 'name': engine.name, 'model': engine.model,\n"
        "                  'max_tokens': engine._fitter.max_tokens, 'same': get_engine() is engine,\n"
        "                  'eager': engine._llm.llm_engine.vllm_config.model_config.enforce_eager,\n"
        "                  'score': engine.score(QUERY, [DOCUMENT])[0]}))\n"
    ).replace("QUERY", repr(QUERY)).replace("DOCUMENT", repr(DOCUMENT))
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "kbservice.settings", "KB_RERANK_BACKEND": "vllm",
           "KB_RERANK_MODEL": str(tiny_qwen3), "KB_RERANK_MAX_TOKENS": "512", "VLLM_CPU_KVCACHE_SPACE": "1",
           "KB_VLLM_ENGINE_ARGS": '{"enforce_eager": true}'}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600,
                          cwd=BASE_DIR)
    assert done.returncode == 0, done.stderr[-3000:]
    built = json.loads(done.stdout.strip().splitlines()[-1])

    assert {key: built[key] for key in ("class", "name", "model", "max_tokens", "same", "eager")} == {
        "class": "VllmEngine", "name": "vllm", "model": str(tiny_qwen3), "max_tokens": 512, "same": True,
        "eager": True}
    # vLLM's default dtype on the CPU is not float32: near the transformers engine's score, not equal.
    assert built["score"] == pytest.approx(TransformersEngine(str(tiny_qwen3)).score(QUERY, [DOCUMENT])[0], abs=0.02)
