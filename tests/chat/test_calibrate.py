"""`kb_calibrate`: evidence through the real recall and rerank worker, thresholds recorded and put in force."""

from __future__ import annotations

import json
from io import StringIO
from pathlib import Path

import httpx
import pytest
from django.core.management import CommandError, call_command

from chat.calibration import clopper_pearson_lower
from chat.models import Feedback, Question
from chat.services.calibration import knowledge_bases_recalibrate_due
from knowledge.models import Calibration, FaqEntry, KnowledgeBase
from rerank.engines.lite import LITE_MODEL
from tests.conftest import WorkerProcess

# Two other phrasings of each shop entry (tests/chat/conftest.py), as a knowledge manager writes them.
SIMILAR = {
    "pay-5003": ["付款时提示交易异常是怎么回事", "扫码付款失败，说交易异常请稍后再试"],
    "address": ["收货地址填错了怎么改", "下单后还能修改收货地址吗"],
    "refund": ["退款几天能到账", "申请退款后多久退回来"],
    "delete-account": ["How can I close my account for good?", "I want my account deleted"],
    "reset-password": ["I can't remember my password", "How do I reset my password?"],
    "camera-crash": ["The app closes as soon as I open the camera", "Camera makes the app crash"],
}


def _with_similar_questions(kb: KnowledgeBase) -> int:
    for external_id, phrasings in SIMILAR.items():
        FaqEntry.objects.filter(kb=kb, external_id=external_id).update(similar_questions=phrasings)
    return sum(len(phrasings) for phrasings in SIMILAR.values())


def _calibrate(*args: str) -> dict:
    out = StringIO()
    call_command("kb_calibrate", *args, stdout=out, stderr=StringIO())
    return json.loads(out.getvalue()[: out.getvalue().rindex("}") + 1])


def test_a_base_without_evidence_is_refused_and_nothing_changes(shop: KnowledgeBase) -> None:
    with pytest.raises(CommandError, match=r"No usable evidence for 'shop'.*nothing was changed"):
        call_command("kb_calibrate", "--kb", "shop", stdout=StringIO())
    shop.refresh_from_db()
    assert (Calibration.objects.count(), shop.calibration_id) == (0, None)


@pytest.mark.parametrize("target", ["0", "1.5", "high", "1"])
def test_bad_targets_are_refused_by_name(shop: KnowledgeBase, target: str) -> None:
    _with_similar_questions(shop)
    with pytest.raises(CommandError, match=rf"--target: '{target}' is not a target: give a number strictly between"):
        call_command("kb_calibrate", "--kb", "shop", "--target", target, stdout=StringIO())
    assert not Calibration.objects.exists()


@pytest.mark.worker
def test_calibrates_on_similar_questions_and_reviewed_feedback_then_answers(
    shop: KnowledgeBase, api: httpx.Client, rerank_worker: WorkerProcess
) -> None:
    """GIVEN twelve similar questions and one agent-reviewed answer (and a customer thumb)
    WHEN kb_calibrate runs at target 0.6
    THEN each source is counted on its own, the record says what it measured, and asks use it."""
    phrasings = _with_similar_questions(shop)
    asked = api.post("/api/v1/ask", json={"kb": "shop", "question": "退款要多久才到账"}).json()
    question = Question.objects.get(pk=asked["question_id"])
    Feedback.objects.create(question=question, helpful=True, source=Feedback.Source.AGENT)
    Feedback.objects.create(question=question, helpful=False, source=Feedback.Source.CUSTOMER)

    result = _calibrate("--kb", "shop", "--target", "0.6")

    calibration = Calibration.objects.get()
    shop.refresh_from_db()
    assert shop.calibration_id == calibration.pk
    assert (calibration.engine, calibration.model, calibration.embed_model) == ("lite", LITE_MODEL, shop.embed_model)
    assert calibration.content_generation == shop.content_generation and calibration.published_entries == 6
    assert calibration.evidence == {
        "similar_questions": {"questions": phrasings, "answerable": phrasings, "no_answer": 0},
        "similar_questions_left_out": {"questions": phrasings, "answerable": 0, "no_answer": phrasings},
        "reviewed_feedback": {"questions": 1, "answerable": 1, "no_answer": 0},
        "customer_feedback_not_used": {"questions": 1},
    }
    assert result["answer_threshold"] == calibration.answer_threshold is not None
    assert calibration.precision_bound is not None and calibration.precision_bound >= 0.6
    chosen = next(row for row in calibration.risk_coverage if row["cutoff"] == calibration.answer_threshold)
    questions = 2 * phrasings + 1
    assert calibration.coverage == pytest.approx(chosen["answered"] / questions) and calibration.coverage > 0
    assert calibration.precision_bound == pytest.approx(clopper_pearson_lower(
        successes=chosen["correct"], trials=chosen["answered"], confidence=0.95))
    assert calibration.suggest_threshold <= calibration.answer_threshold
    assert calibration.risk_coverage[0]["cutoff"] == 0.99 and len(calibration.risk_coverage) == 99

    # Evidence in two languages: each is fitted and certified on its own questions (12 of them in Chinese:
    # 6 similar questions, their 6 left-out copies, the reviewed ask; 12 in English), and decides its own.
    assert {language: fitted["questions"] for language, fitted in calibration.by_language.items()} == {
        "zh": phrasings + 1, "en": phrasings}
    for fitted in calibration.by_language.values():
        assert fitted["answer_threshold"] is None or fitted["precision_bound"] >= 0.6
        assert fitted["answer_threshold"] is None or fitted["suggest_threshold"] <= fitted["answer_threshold"]
    bodies = [api.post("/api/v1/ask", json={"kb": "shop", "question": text}).json()
              for texts in SIMILAR.values() for text in texts]
    for body in bodies:
        fitted = calibration.by_language[body["recall"]["language"]]
        assert body["calibrated"] and body["thresholds"] == {"answer": fitted["answer_threshold"],
                                                             "suggest": fitted["suggest_threshold"]}
        assert (body["decision"] == "answer") == (fitted["answer_threshold"] is not None
                                                  and body["answer"]["scores"]["rerank"] >= fitted["answer_threshold"])
    assert any(body["decision"] == "answer" for body in bodies)


@pytest.mark.worker
def test_evidence_that_cannot_reach_the_target_never_auto_answers(
    shop: KnowledgeBase, api: httpx.Client, rerank_worker: WorkerProcess
) -> None:
    _with_similar_questions(shop)
    out = StringIO()
    call_command("kb_calibrate", "--kb", "shop", "--target", "0.99", stdout=out)

    calibration = Calibration.objects.get()
    assert (calibration.answer_threshold, calibration.precision_bound, calibration.coverage) == (None, None, 0.0)
    assert "will not auto-answer (it suggests)" in out.getvalue()
    assert calibration.labels_needed is None or calibration.labels_needed > 0
    for texts in SIMILAR.values():
        body = api.post("/api/v1/ask", json={"kb": "shop", "question": texts[0]}).json()
        assert (body["decision"] in {"suggest", "handoff"}, body["calibrated"], body["thresholds"]["answer"]) == (
            True, True, None)


@pytest.mark.worker
def test_scheduled_recalibration_waits_for_enough_new_reviewed_feedback(
    shop: KnowledgeBase, api: httpx.Client, rerank_worker: WorkerProcess, settings: object
) -> None:
    _with_similar_questions(shop)
    _calibrate("--kb", "shop", "--target", "0.6")
    settings.KB_CALIBRATION_MIN_NEW_FEEDBACK = 2  # type: ignore[attr-defined]
    asked = api.post("/api/v1/ask", json={"kb": "shop", "question": "退款要多久才到账"}).json()
    question = Question.objects.get(pk=asked["question_id"])
    Feedback.objects.create(question=question, helpful=True, source=Feedback.Source.AGENT)
    assert knowledge_bases_recalibrate_due() == []  # one new review: not yet

    Feedback.objects.create(question=question, helpful=True, source=Feedback.Source.AGENT)
    recalibrated = knowledge_bases_recalibrate_due()

    shop.refresh_from_db()
    assert recalibrated == [shop.calibration_id] and Calibration.objects.count() == 2
    assert shop.calibration is not None and shop.calibration.evidence["reviewed_feedback"]["questions"] == 1


@pytest.mark.worker
def test_labelled_queries_and_their_left_out_copies_are_counted_apart(
    shop: KnowledgeBase, rerank_worker: WorkerProcess, tmp_path: Path
) -> None:
    rows = [{"query": "付款时提示交易异常", "relevant_ids": ["pay-5003"]},
            {"query": "地址填错了想改一下", "relevant_ids": ["address"]},
            {"query": "How can I remove my account for good?", "relevant_ids": ["delete-account"]},
            {"query": "明天北京天气怎么样", "relevant_ids": []},
            {"query": "What is the weather tomorrow?", "relevant_ids": ["not-in-this-kb"]}]  # left out
    path = tmp_path / "labelled.jsonl"
    path.write_text("\n".join(json.dumps(row, ensure_ascii=False) for row in rows), encoding="utf-8")

    _calibrate("--kb", "shop", "--queries", str(path), "--simulate-no-answer", "--no-feedback", "--target", "0.6")

    assert Calibration.objects.get().evidence == {
        "queries": {"questions": 4, "answerable": 3, "no_answer": 1},
        "queries_left_out": {"questions": 3, "answerable": 0, "no_answer": 3},
        "customer_feedback_not_used": {"questions": 0},
    }
