"""The case check: regression cases scored before and after a change, through the real recall and rerank
worker, with the change rolled back afterwards."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
import redis
import reversion
from django.conf import settings
from django.core.management import call_command
from django.db import connection
from reversion.models import Revision, Version

from chat import evaluation
from chat.evaluation import EvaluationError, LabelledQuery, ScoringMemo, queries_score
from chat.services.ask import faq_rerank_document
from chat.services.checks import BROKEN, FIXED, faq_change_check
from knowledge import selectors
from knowledge.cases.changes import FaqChange
from knowledge.cases.services import regression_case_add, regression_case_clean
from knowledge.models import CaseCheck, CaseExpect, CaseSource, FaqEntry, FaqStatus, KnowledgeBase, RegressionCase
from knowledge.services import faq_entry_update
from rerank.batching import RerankRequest
from rerank.services import rerank_score
from tests.conftest import WorkerProcess
from tests.helpers import calibration_in_force

CASES = [("退款要几天才能到账", CaseExpect.ANSWER, "refund"),
         ("How can I delete my account?", CaseExpect.ANSWER, "delete-account"),
         ("收货地址填错了怎么改", CaseExpect.SUGGEST, "address"),
         ("What is the capital of France?", CaseExpect.NO_ANSWER, None)]


def entry(kb: KnowledgeBase, external_id: str) -> FaqEntry:
    return FaqEntry.objects.get(kb=kb, external_id=external_id)


def add_cases(kb: KnowledgeBase, cases: Sequence[tuple[str, str, str | None]] = CASES) -> list[RegressionCase]:
    added = []
    for question, expect, external_id in cases:
        entry_id = entry(kb, external_id).pk if external_id else None
        case = regression_case_clean(kb=kb, question=question, expect=expect, entry_id=entry_id)
        added.append(regression_case_add(kb=kb, case=case, source=CaseSource.ADMIN)[0])
    return added


@pytest.fixture
def checked_shop(shop: KnowledgeBase, rerank_worker: WorkerProcess) -> KnowledgeBase:
    """The shop with its cases, calibrated so that its own questions are auto-answered."""
    calibration_in_force(shop, answer=0.3, suggest=0.05)
    add_cases(shop)
    return shop


def snapshot(kb: KnowledgeBase) -> dict[str, Any]:
    """Everything a change could leave behind: entries as stored (derived columns too), vectors, BM25
    postings and statistics, revisions, the content generation and the Redis cache keys."""
    tables = {}
    with connection.cursor() as cursor:
        for table, order in (("knowledge_faqentry", "id"), ("knowledge_faqembedding", "id"),
                             ("knowledge_faqposting", "entry_id, term"), ("knowledge_faqtermstat", "language, term"),
                             ("knowledge_faqcorpusstat", "language")):
            cursor.execute(f"SELECT t::text FROM {table} t ORDER BY {order}")
            tables[table] = [row[0] for row in cursor.fetchall()]
    client = redis.Redis.from_url(settings.REDIS_URL)
    # Not the workers' heartbeats, nor the Prometheus counters (a check's reranks are counted, as they should be).
    keys = sorted(key for key in client.scan_iter(match="kb:*")
                  if not key.startswith((b"kb:rerank:worker:", b"kb:metrics:")))
    kb.refresh_from_db()
    return {**tables, "revisions": Revision.objects.count(),
            "versions": list(Version.objects.values_list("pk", flat=True)), "generation": kb.content_generation,
            "cache": {key: client.dump(key) for key in keys}}


@pytest.mark.worker
def test_a_run_scores_every_case_as_the_pipeline_decides(checked_shop: KnowledgeBase) -> None:
    check = faq_change_check(kb=checked_shop)
    by_question = {row["question"]: row for row in check.results}
    assert check.cases == 4 and check.status == CaseCheck.Status.DONE
    assert all(row["before"] == row["after"] and row["outcome"] == "unchanged" for row in check.results)
    refund = by_question["退款要几天才能到账"]["after"]
    assert (refund["decision"], refund["top_entry"], refund["rank"]) == ("answer", entry(checked_shop, "refund").pk, 1)
    assert check.passed_after == 4, check.results


@pytest.mark.worker
def test_a_check_leaves_no_trace(checked_shop: KnowledgeBase, api: Any) -> None:
    """GIVEN a cached answer and a change that archives the refund entry and edits another
    WHEN the change is checked
    THEN the refund case is reported broken, and entries, vectors, postings, revisions, generation and
    the cache are exactly as they were."""
    api.post("/api/v1/ask", json={"kb": "shop", "question": "退款多久到账？"}).raise_for_status()
    refund, address = entry(checked_shop, "refund"), entry(checked_shop, "address")
    before = snapshot(checked_shop)

    archived = faq_change_check(kb=checked_shop, change=FaqChange(op="set_status", kb_id=checked_shop.pk,
                                                                  entry_ids=(refund.pk,), status=FaqStatus.ARCHIVED))
    # As the admin runs it: inside the revision its change view collects (saved at the block's end).
    with reversion.create_revision():
        edited = faq_change_check(kb=checked_shop, change=FaqChange(
            op="update", kb_id=checked_shop.pk, entry_ids=(address.pk,), expected_version=address.version,
            data={"question": "退款要几天才能到账？", "summary": "退款到账时效", "similar_questions": ["退款几天到"]}))

    assert snapshot(checked_shop) == before
    assert [row["question"] for row in archived.results if row["outcome"] == BROKEN] == ["退款要几天才能到账"]
    assert archived.broken == 1 and archived.passed_after == 3 and archived.entries == [refund.pk]
    broken = next(row for row in archived.results if row["outcome"] == BROKEN)
    assert broken["before"]["rank"] == 1 and broken["after"]["rank"] is None
    assert edited.entries == [address.pk] and edited.cases == 4


@pytest.mark.worker
def test_a_change_that_fixes_a_case_reports_it_fixed(checked_shop: KnowledgeBase) -> None:
    camera = entry(checked_shop, "camera-crash")
    add_cases(checked_shop, [("相机一打开就闪退", CaseExpect.ANSWER, "camera-crash")])
    change = FaqChange(op="update", kb_id=checked_shop.pk, entry_ids=(camera.pk,), expected_version=camera.version,
                       data={"summary": "相机一打开就闪退：安卓相机权限导致崩溃"})
    check = faq_change_check(kb=checked_shop, change=change)
    fixed = [row for row in check.results if row["outcome"] == FIXED]
    assert [row["question"] for row in fixed] == ["相机一打开就闪退"], check.results[-1]
    assert check.broken == 0
    assert FaqEntry.objects.get(pk=camera.pk).summary == "Android camera permission crash"


@pytest.mark.worker
def test_an_import_preview_includes_the_check_and_writes_nothing(
    checked_shop: KnowledgeBase, tmp_file: Callable[[str, bytes], Path]
) -> None:
    refund = entry(checked_shop, "refund")
    rows = [{"external_id": "refund", "question": refund.question, "answer": refund.answer, "summary": refund.summary,
             "status": "archived"},
            {"external_id": "invoice", "question": "怎么开发票？", "answer": "在订单详情页申请电子发票。"}]
    path = tmp_file("faq.jsonl", "\n".join(json.dumps(row, ensure_ascii=False) for row in rows).encode())
    before = snapshot(checked_shop)
    out = StringIO()
    call_command("kb_import", str(path), "--kb", "shop", "--dry-run", stdout=out, stderr=StringIO())
    text = out.getvalue()
    assert "Regression check: 4 cases — 1 broken, 0 fixed, 3 unchanged." in text, text
    assert "BROKEN: 退款要几天才能到账 (expected answer" in text
    assert snapshot(checked_shop) == before
    assert not FaqEntry.objects.filter(external_id="invoice").exists()


@pytest.mark.worker
def test_many_questions_are_asked_exactly_as_each_alone(checked_shop: KnowledgeBase,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """queries_score embeds the questions in batches and reranks many per worker round trip: each
    question still gets the candidates, scores and order it gets asked alone (a duplicate too)."""
    monkeypatch.setattr(selectors, "QUERY_EMBED_BATCH", 2)
    monkeypatch.setattr(evaluation, "RERANK_BATCH", 3)
    questions = [question for question, _, _ in CASES] + ["发票怎么开", CASES[0][0]]

    run = queries_score(kb=checked_shop, queries=[LabelledQuery(query=q, relevant=frozenset()) for q in questions])

    for question, scored in zip(questions, run.scored, strict=True):
        recall = selectors.faq_recall(kb=checked_shop, query=question)
        alone = rerank_score(requests=[RerankRequest(
            query=question, documents=[faq_rerank_document(c.entry) for c in recall.candidates[:checked_shop.rerank_k]],
            instruction=checked_shop.rerank_instruction)], timeout=60)
        assert [c.entry.pk for c in scored.recall.candidates] == [c.entry.pk for c in recall.candidates]
        assert [(c.fused, c.vector, c.fulltext) for c in scored.recall.candidates] == \
            [(c.fused, c.vector, c.fulltext) for c in recall.candidates]
        shown = [c.entry.pk for c in recall.candidates[:checked_shop.rerank_k]]
        assert dict(zip(scored.reranked, scored.scores, strict=True)) == dict(zip(shown, alone.scores[0], strict=True))


def test_a_second_pass_reranks_only_what_changed(checked_shop: KnowledgeBase, settings: Any,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The check asks every case twice; the second time only questions whose candidates changed go to the
    worker. Here no worker listens the second time: what was reranked before must not be asked again."""
    queries = [LabelledQuery(query=question, relevant=frozenset()) for question, _, _ in CASES]
    memo = ScoringMemo()
    first = queries_score(kb=checked_shop, queries=queries, memo=memo)
    settings.KB_RERANK_QUEUE = "nobody-listens"
    monkeypatch.setattr(evaluation, "RERANK_WAIT", 1)

    again = queries_score(kb=checked_shop, queries=queries, memo=memo)

    assert [(s.reranked, s.scores) for s in again.scored] == [(s.reranked, s.scores) for s in first.scored]
    refund = entry(checked_shop, "refund")
    faq_entry_update(entry_id=refund.pk, expected_version=refund.version, data={"answer": "原路退回，一般三天到账。"})
    with pytest.raises(EvaluationError, match="did not answer"):
        queries_score(kb=checked_shop, queries=queries[:1], memo=memo)
