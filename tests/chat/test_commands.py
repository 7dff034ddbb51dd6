"""`kb_ask` and `kb_eval` run the real pipeline (real rerank worker) and print JSON."""

from __future__ import annotations

import json
from collections.abc import Callable
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from chat.models import AskLog
from knowledge.models import KnowledgeBase
from tests.conftest import WorkerProcess

pytestmark = pytest.mark.worker


def _run(*args: str) -> dict:
    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO())
    return json.loads(out.getvalue())


def test_kb_ask_prints_the_api_answer(shop: KnowledgeBase, rerank_worker: WorkerProcess) -> None:
    body = _run("kb_ask", "--kb", "shop", "--top-n", "2", "退款要几天才能到账")

    assert {"ticket", "question_id", "decision", "answer", "alternatives", "rerank", "cache",
            "timings_ms"} <= set(body)
    assert body["answer"]["external_id"] == "refund"
    assert body["rerank"]["status"] == "ok" and body["cache"] == "miss"
    assert len(body["alternatives"]) == 1
    assert AskLog.objects.get(question_id=body["question_id"]).source == "cli"


@pytest.mark.parametrize(("args", "message"), [
    (["--kb", "nope", "hello"], "No knowledge base"),
    (["--kb", "shop", "   "], "must not be empty"),
    (["--kb", "shop", "--top-n", "0", "hello"], "--top-n"),
])
def test_kb_ask_refuses_bad_input(shop: KnowledgeBase, args: list[str], message: str) -> None:
    with pytest.raises(CommandError, match=message):
        call_command("kb_ask", *args, stdout=StringIO())
    assert not AskLog.objects.exists()


def test_kb_eval_reports_every_stage_and_the_decision_mix(
    shop: KnowledgeBase, rerank_worker: WorkerProcess, tmp_file: Callable[[str, bytes], Path]
) -> None:
    queries = [
        {"query": "付款时提示交易异常", "relevant_ids": ["pay-5003"]},
        {"query": "地址填错了想改一下", "relevant_ids": ["address"]},
        {"query": "How can I remove my account for good?", "relevant_ids": ["delete-account"]},
        {"query": "password reset link", "relevant_ids": ["reset-password", "delete-account"]},
        {"query": "What is the weather tomorrow?", "relevant_ids": ["not-in-this-kb"]},
    ]
    path = tmp_file("queries.jsonl", "\n".join(json.dumps(q, ensure_ascii=False) for q in queries).encode())

    report = _run("kb_eval", "--kb", "shop", "--queries", str(path), "--wait", "30")

    assert report["queries"] == 5
    assert set(report["stages"]) == {"vector", "fulltext", "fused", "reranked"}
    for metrics in report["stages"].values():
        assert set(metrics) == {"recall@1", "recall@5", "recall@10", "recall@50", "mrr@10"}
        assert metrics["recall@1"] <= metrics["recall@5"] <= metrics["recall@10"] <= metrics["recall@50"] <= 0.8
    # Four answerable queries of five; the reranker puts each right answer first.
    assert report["stages"]["reranked"]["recall@1"] == 0.8
    assert report["stages"]["reranked"]["mrr@10"] == 0.8
    assert sum(report["decisions"].values()) == 5
    assert not AskLog.objects.exists()  # an evaluation is not customer traffic


@pytest.mark.parametrize(("content", "message"), [
    (b"", "has no queries"),
    (b'{"query": "x"}\n', 'expected {"query"'),
    (b"not json\n", "not JSON"),
    (b'{"query": "  ", "relevant_ids": ["a"]}\n', 'expected {"query"'),
])
def test_kb_eval_refuses_a_bad_queries_file(shop: KnowledgeBase, tmp_file: Callable[[str, bytes], Path],
                                            content: bytes, message: str) -> None:
    path = tmp_file("bad.jsonl", content)
    with pytest.raises(CommandError, match=message):
        call_command("kb_eval", "--kb", "shop", "--queries", str(path), stdout=StringIO())
