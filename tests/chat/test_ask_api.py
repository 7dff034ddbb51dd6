"""POST /api/v1/ask over real HTTP, with the real rerank worker, Redis and Postgres."""

from __future__ import annotations

import html
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import redis
from pytest_django.fixtures import Settings

from chat.models import AskLog, Question, Ticket
from knowledge import fusion
from knowledge.models import FaqEntry, KnowledgeBase
from knowledge.services import faq_entry_create, faq_entry_update
from rerank.batching import RerankRequest
from rerank.services import rerank_submit
from tests.conftest import WorkerProcess
from tests.helpers import calibration_in_force, wait_until

pytestmark = pytest.mark.worker


def _ask(api: httpx.Client, question: str, **extra: object) -> dict:
    response = api.post("/api/v1/ask", json={"kb": "shop", "question": question, **extra})
    assert response.status_code == 200, response.text
    return response.json()


def test_answer_is_scored_with_highlight_and_says_whose_order(api: httpx.Client, rerank_worker: WorkerProcess) -> None:
    body = _ask(api, "付款的时候提示交易异常，怎么回事")

    assert body["rerank"]["status"] == "ok"
    # The lite engine scores but does not reorder (its order is below recall's out of fold): fused order.
    assert body["rerank"]["order"] == "recall" and "lite" in body["rerank"]["order_reason"]
    fused = [entry["scores"]["fused"] for entry in [body["answer"], *body["alternatives"]]]
    assert fused == sorted(fused, reverse=True)
    top = body["answer"]
    assert top["external_id"] == "pay-5003"
    assert set(top["scores"]) == {"vector", "keyword", "fused", "rerank"}
    assert 0.0 <= top["scores"]["rerank"] <= 1.0
    assert body["recall"] == {"language": "zh", "fusion": fusion.params_for("zh").label}
    assert body["cache"] == "miss" and body["ticket"]
    spans = top["highlight"]["spans"]
    assert spans and all(0 <= s["start"] < s["end"] <= len(top["answer"]) for s in spans)
    assert "<mark>" in top["highlight"]["html"]
    assert html.unescape(top["highlight"]["html"].replace("<mark>", "").replace("</mark>", "")) == top["answer"]
    assert [alt["rank"] for alt in body["alternatives"]] == list(range(2, 2 + len(body["alternatives"])))


def test_decision_follows_the_calibrated_thresholds(
    api: httpx.Client, shop: KnowledgeBase, rerank_worker: WorkerProcess
) -> None:
    question = "How can I delete my account?"
    first = _ask(api, question)
    score = first["answer"]["scores"]["rerank"]
    step = min(0.01, (1.0 - score) / 3)
    assert step > 0, score
    # Uncalibrated: never an auto-answer, however high the score.
    assert (first["decision"], first["calibrated"], first["thresholds"]["answer"]) == ("suggest", False, None)

    for answer_at, suggest_at, expected in ((score, 0.0, "answer"), (score + step, score, "suggest"),
                                             (score + 2 * step, score + step, "handoff"), (None, 0.0, "suggest")):
        calibration_in_force(shop, answer=answer_at, suggest=suggest_at)
        body = _ask(api, question)
        assert (body["decision"], body["calibrated"], body["thresholds"]["answer"]) == (expected, True, answer_at)


def test_a_calibration_fitted_per_language_decides_each_question_by_its_own(
    api: httpx.Client, shop: KnowledgeBase, rerank_worker: WorkerProcess
) -> None:
    """GIVEN a calibration whose pooled thresholds would auto-answer everything, fitted per language with
    only Chinese evidence certified WHEN a Chinese and an English question are asked THEN the Chinese one
    is answered with the Chinese thresholds; the English one, whose language no evidence vouches for
    here, is not auto-answered and says it is uncalibrated."""
    zh = {"answer_threshold": 0.0, "suggest_threshold": 0.0, "precision_bound": 0.95, "coverage": 1.0,
          "labels_needed": None, "questions": 40}
    en = {**zh, "answer_threshold": None, "precision_bound": None, "coverage": 0.0, "labels_needed": 30}
    calibration_in_force(shop, answer=0.0, suggest=0.0, by_language={"zh": zh})
    chinese, english = _ask(api, "收货地址写错了怎么改"), _ask(api, "How can I delete my account?")
    assert (chinese["decision"], chinese["calibrated"], chinese["thresholds"]) == (
        "answer", True, {"answer": 0.0, "suggest": 0.0})
    assert (english["decision"], english["calibrated"], english["thresholds"]["answer"]) == ("suggest", False, None)

    calibration_in_force(shop, answer=0.0, suggest=0.0, by_language={"zh": zh, "en": en})
    english = _ask(api, "How can I delete my account?")
    assert (english["decision"], english["calibrated"], english["thresholds"]["answer"]) == ("suggest", True, None)


def test_an_engine_or_model_change_drops_the_base_to_uncalibrated(
    api: httpx.Client, shop: KnowledgeBase, rerank_worker: WorkerProcess
) -> None:
    """GIVEN a calibration that auto-answers everything, measured with the Qwen3 engine
    WHEN the lite engine answers
    THEN the calibration does not apply: suggest, calibrated false; and it applies again once it is lite's."""
    question = "How can I delete my account?"
    calibration_in_force(shop, answer=0.0, suggest=0.0, engine="vllm", model="Qwen/Qwen3-Reranker-0.6B")
    other = _ask(api, question)
    assert (other["decision"], other["calibrated"], other["rerank"]["engine"]) == ("suggest", False, "lite")
    calibration_in_force(shop, answer=0.0, suggest=0.0, engine="lite", model="lite-v0")  # another model
    assert (_ask(api, question)["decision"], _ask(api, question)["calibrated"]) == ("suggest", False)
    calibration_in_force(shop, answer=0.0, suggest=0.0)
    assert (_ask(api, question)["decision"], _ask(api, question)["calibrated"]) == ("answer", True)


def test_script_in_an_answer_comes_back_inert(api: httpx.Client, shop: KnowledgeBase,
                                             rerank_worker: WorkerProcess) -> None:
    faq_entry_create(kb=shop, data={"question": "Why is my invoice blank?",
                                    "answer": "Invoices <script>alert('x')</script> need a billing address. "
                                              "Add your billing address and the invoice fills in."})
    from knowledge.services import faq_entries_embed

    faq_entries_embed(entry_ids=list(shop.entries.values_list("pk", flat=True)))
    body = _ask(api, "my invoice is blank <img src=x onerror=alert(1)>")
    marked = body["answer"]["highlight"]["html"]
    assert "<script" not in marked and "&lt;script&gt;" in marked
    assert "<img" not in str(body["answer"]["highlight"])
    stored = Question.objects.get(pk=body["question_id"])
    assert stored.text == "my invoice is blank <img src=x onerror=alert(1)>"


def test_cache_hit_after_miss_and_an_edit_invalidates(
    api: httpx.Client, shop: KnowledgeBase, rerank_worker: WorkerProcess
) -> None:
    first = _ask(api, "退款多久能到账？")
    second = _ask(api, "  退款多久能到账 ")  # normalisation: whitespace and trailing punctuation
    assert (first["cache"], second["cache"]) == ("miss", "hit")
    assert second["answer"]["answer"] == first["answer"]["answer"]

    entry = FaqEntry.objects.get(kb=shop, external_id="refund")
    faq_entry_update(entry_id=entry.pk, expected_version=entry.version,
                     data={"answer": "退款审核通过后，原路退回。银行卡一般1到2个工作日到账。"})
    third = _ask(api, "退款多久能到账？")
    assert third["cache"] == "miss"
    assert "1到2个工作日" in third["answer"]["answer"]


def test_concurrent_identical_asks_compute_once(api: httpx.Client, rerank_worker: WorkerProcess) -> None:
    question = "The app keeps crashing when the camera opens"
    with ThreadPoolExecutor(max_workers=20) as pool:
        bodies = list(pool.map(lambda _: _ask(api, question), range(20)))
    statuses = sorted(body["cache"] for body in bodies)
    assert statuses.count("miss") == 1
    assert set(statuses) <= {"miss", "shared", "hit"}
    assert {body["answer"]["external_id"] for body in bodies} == {"camera-crash"}
    assert AskLog.objects.filter(text=question, cache="miss").count() == 1


def test_degraded_when_no_rerank_worker_answers(
    api: httpx.Client, settings: Settings, redis_client: redis.Redis, start_worker: object
) -> None:
    settings.KB_RERANK_TIMEOUT = 1.0
    # Route this test's reranks to a queue no worker consumes: the same as every worker being down.
    # (A queue of its own: a workbench test's timed-out rerank may be waiting on "rerank-nobody".)
    settings.KB_RERANK_QUEUE = "rerank-nobody-asks"
    body = _ask(api, "I forgot my password")
    assert body["rerank"]["status"] == "degraded"
    assert body["decision"] == "suggest"
    assert body["answer"]["scores"]["rerank"] is None
    assert body["answer"]["external_id"] == "reset-password"
    # No worker is ready on the queue: the ask knows it from the heartbeats, queues nothing and so
    # waits for nothing (counted on the queue, not timed).
    assert body["rerank"]["reason"] == "no_worker"
    assert redis_client.llen("rerank-nobody-asks") == 0
    # A degraded answer is never cached.
    assert _ask(api, "I forgot my password")["cache"] == "miss"


def test_an_ask_does_not_queue_behind_a_rerank_backlog(
    api: httpx.Client, settings: Settings, redis_client: redis.Redis, start_worker: object
) -> None:
    settings.KB_RERANK_QUEUE = queue = "rerank-backlog-nobody"
    settings.KB_RERANK_MAX_BACKLOG = 3

    def backlog(size: int) -> None:
        redis_client.delete(queue)
        for _ in range(size):
            rerank_submit(requests=[RerankRequest(query="q", documents=["d"])], expires=60)

    # As many waiting as the limit: the ask answers degraded at once, queueing nothing.
    backlog(3)
    settings.KB_RERANK_TIMEOUT = timeout = 20.0
    body = _ask(api, "I forgot my password")
    # Not queued, so not waited for: far short of the deadline it would otherwise have waited out.
    assert body["timings_ms"]["rerank"] < timeout * 1000 / 4, body["timings_ms"]
    assert (body["rerank"]["status"], body["rerank"]["reason"], body["decision"]) == ("degraded", "backlog", "suggest")
    assert body["answer"]["external_id"] == "reset-password"
    assert redis_client.llen(queue) == 3

    # One fewer, but no rerank worker is ready on this queue: the ask does not queue either.
    backlog(2)
    body = _ask(api, "The app crashes when I open the camera")
    assert (body["rerank"]["status"], body["rerank"]["reason"]) == ("degraded", "no_worker")
    assert redis_client.llen(queue) == 2
    redis_client.delete(queue)


def test_a_late_rerank_updates_the_degraded_answer_of_the_ticket(
    api: httpx.Client, shop: KnowledgeBase, settings: Settings, cpu_worker: WorkerProcess,
    rerank_worker: WorkerProcess,
) -> None:
    # The web process routes its reranks to a queue nobody consumes, so the ask degrades. The late
    # rerank runs in the CPU worker, whose environment still names the live rerank queue: exactly a
    # rerank that was late, then finished.
    settings.KB_RERANK_TIMEOUT = 1.0
    settings.KB_RERANK_QUEUE = "rerank-late-nobody"
    # Auto-answer at any score: a degraded answer still only suggests, the late rerank then answers.
    calibration_in_force(shop, answer=0.0, suggest=0.0)
    body = _ask(api, "The app crashes when I open the camera")
    assert (body["rerank"]["status"], body["decision"]) == ("degraded", "suggest")

    def ticket_question() -> dict:
        return api.get(f"/api/v1/tickets/{body['ticket']}").json()["questions"][0]

    wait_until(lambda: ticket_question()["rerank"]["status"] == "ok", timeout=120)
    updated = ticket_question()
    assert updated["rerank"]["late"] is True
    assert updated["answer"]["external_id"] == "camera-crash"
    assert updated["answer"]["scores"]["rerank"] is not None
    assert updated["decision"] == "answer"
    stored = Question.objects.get(pk=body["question_id"])
    assert stored.rerank_status == "ok" and stored.decision == updated["decision"]
    # The late rerank rewrites the stored answer; it is not a second question or ask.
    assert Question.objects.filter(ticket__public_id=body["ticket"]).count() == 1
    assert AskLog.objects.filter(question=stored).count() == 1


def test_a_follow_up_ask_joins_its_ticket(api: httpx.Client, rerank_worker: WorkerProcess) -> None:
    first = _ask(api, "退款多久能到账？", customer="c-42")
    ticket = Ticket.objects.get(public_id=first["ticket"])
    assert (ticket.status, ticket.customer, ticket.channel) == ("open", "c-42", "api")

    second = _ask(api, "付款的时候提示交易异常，怎么回事", ticket=first["ticket"])
    assert second["ticket"] == first["ticket"] and second["question_id"] != first["question_id"]
    ticket.refresh_from_db()
    assert ticket.updated_at > ticket.created_at
    stored = api.get(f"/api/v1/tickets/{first['ticket']}").json()
    assert [q["id"] for q in stored["questions"]] == [first["question_id"], second["question_id"]]
    assert stored["questions"][1]["answer"]["external_id"] == second["answer"]["external_id"]
    logs = AskLog.objects.filter(question__ticket=ticket).order_by("pk")
    assert [(log.question_id, log.cache, log.source) for log in logs] == [
        (first["question_id"], "miss", "api"), (second["question_id"], "miss", "api")]
    assert logs[1].top_entry_id == second["answer"]["id"]

    unknown = api.post("/api/v1/ask", json={"kb": "shop", "question": "还在吗", "ticket": str(uuid.uuid4())})
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "not_found"
    assert Question.objects.count() == 2


def test_a_cache_hit_on_a_calibrated_base_is_still_one_statement(
    shop: KnowledgeBase, rerank_worker: WorkerProcess
) -> None:
    """The calibration in force is read on a miss only; a hit costs what it cost before: the one statement
    that records ticket, question and ask log."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from chat.services.ask import AskParams, ask

    calibration_in_force(shop, answer=0.0, suggest=0.0)
    params = AskParams(question="How can I delete my account?")
    kb = KnowledgeBase.objects.get(pk=shop.pk)
    assert ask(kb=kb, params=params)["cache"] == "miss"
    kb = KnowledgeBase.objects.get(pk=shop.pk)
    with CaptureQueriesContext(connection) as captured:
        body = ask(kb=kb, params=params)
    assert (body["cache"], body["decision"], body["calibrated"]) == ("hit", "answer", True)
    assert len(captured.captured_queries) == 1, [query["sql"][:80] for query in captured.captured_queries]
