"""Whose order an answer is in: the reranker's where it reorders that language, else recall's with its scores."""

from __future__ import annotations

import pytest

from chat.services.ask import AskParams, compose_answer
from knowledge.models import KnowledgeBase
from knowledge.selectors import faq_recall
from rerank.services import RerankOutcome
from tests.chat.conftest import make_kb


@pytest.fixture
def shop(db: None) -> KnowledgeBase:
    return make_kb("shop")


def _compose(kb: KnowledgeBase, question: str, *, reorders_in: frozenset[str] | None) -> dict:
    recall = faq_recall(kb=kb, query=question)
    assert len(recall.candidates) >= 3
    # Scores that reverse recall's order, so whose order the answer follows shows.
    scores = [round(0.1 + 0.8 * index / len(recall.candidates), 4) for index in range(len(recall.candidates))]
    outcome = RerankOutcome(status="ok", scores=[scores], engine="test", model="m", reorders_in=reorders_in)
    value = compose_answer(kb=kb, params=AskParams(question=question, top_n=10), language=recall.language,
                           candidates=recall.candidates, outcome=outcome, timings={})
    value["recalled"] = [candidate.entry.pk for candidate in recall.candidates]
    value["given"] = dict(zip(value["recalled"], scores, strict=True))
    return value


def test_an_engine_that_reorders_every_language_orders_by_its_scores(shop: KnowledgeBase) -> None:
    value = _compose(shop, "退款多久能到账", reorders_in=None)

    assert value["candidates"] == value["recalled"][::-1]
    assert value["rerank"]["order"] == "reranked" and "order_reason" not in value["rerank"]
    assert value["answer"]["scores"]["rerank"] == max(value["given"].values())


def test_where_the_engine_does_not_reorder_recall_order_stays_and_its_score_decides(shop: KnowledgeBase) -> None:
    value = _compose(shop, "退款多久能到账", reorders_in=frozenset({"en"}))

    assert value["candidates"] == value["recalled"]
    assert value["rerank"]["order"] == "recall"
    assert "zh" in value["rerank"]["order_reason"]
    top = value["answer"]
    assert top["id"] == value["recalled"][0] and top["scores"]["rerank"] == value["given"][top["id"]]
    shown = [value["answer"], *value["alternatives"]]
    assert [entry["scores"]["rerank"] for entry in shown] == [value["given"][entry["id"]] for entry in shown]


def test_the_language_decides_for_an_engine_that_reorders_some(shop: KnowledgeBase) -> None:
    value = _compose(shop, "How do I delete my account?", reorders_in=frozenset({"en"}))

    assert value["candidates"] == value["recalled"][::-1] and value["rerank"]["order"] == "reranked"
