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
from tests.helpers import calibration_in_force

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
        {"query": "明天北京天气怎么样", "relevant_ids": []},  # a no-answer question
    ]
    path = tmp_file("queries.jsonl", "\n".join(json.dumps(q, ensure_ascii=False) for q in queries).encode())

    report = _run("kb_eval", "--kb", "shop", "--queries", str(path), "--wait", "30", "--simulate-no-answer")

    assert (report["queries"], report["answerable"], report["no_answer"]) == (6, 5, 1)
    assert set(report["stages"]) == {"vector", "fulltext", "fused", "reranked"}
    for metrics in report["stages"].values():
        assert set(metrics) == {"recall@1", "recall@5", "recall@10", "recall@50", "mrr@10"}
    # Four answerable queries of five can be found; on this small base every stage (not only the
    # reranked one) puts each of their right answers first, so a stage that lost its hits shows here.
    for stage, metrics in report["stages"].items():
        assert metrics == dict.fromkeys(metrics, 0.8), (stage, metrics)
    # Uncalibrated: nothing is auto-answered, so no false answers either.
    decision = report["decision"]
    assert (decision["decisions"]["answer"], decision["answer_precision"], decision["false_answer_rate"]) == (
        0, None, 0)
    assert sum(decision["decisions"].values()) == 6
    assert {language: t["calibrated"] for language, t in report["thresholds"].items()} == {"en": False, "zh": False}
    assert 0.0 <= decision["auroc"] <= 1.0 and 0.0 <= decision["ece"] <= 1.0
    assert [row["cutoff"] for row in decision["risk_coverage"]][:2] == [0.95, 0.9]
    # The four queries naming entries of this base, asked again with those entries left out.
    assert report["simulated_no_answer"]["questions"] == 4
    assert not AskLog.objects.exists()  # an evaluation is not customer traffic

    calibration_in_force(shop, answer=0.0, suggest=0.0)  # answers everything
    report = _run("kb_eval", "--kb", "shop", "--queries", str(path), "--wait", "30", "--simulate-no-answer")
    decision = report["decision"]
    assert {language: t["calibrated"] for language, t in report["thresholds"].items()} == {"en": True, "zh": True}
    # Right at rank 1 for 4 of the 6; the no-answer question and every left-out copy are false answers.
    assert (decision["coverage"], decision["answer_precision"], decision["false_answer_rate"]) == (1.0, 0.6667, 1.0)
    assert report["simulated_no_answer"]["false_answer_rate"] == 1.0


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
