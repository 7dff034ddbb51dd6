"""Tickets, feedback, keys and throttling over real HTTP."""

from __future__ import annotations

import httpx
import pytest
from pytest_django.fixtures import Settings

from chat.models import ApiKey, Feedback, Question, Ticket
from chat.services.keys import api_key_create, api_key_revoke
from knowledge.models import FaqEntry, KnowledgeBase
from tests.chat.conftest import make_kb
from tests.conftest import WorkerProcess
from tests.helpers import wait_until

pytestmark = pytest.mark.worker


def test_async_ticket_is_answered_by_the_worker_then_handed_off_and_resolved(
    api: httpx.Client, cpu_worker: WorkerProcess, rerank_worker: WorkerProcess
) -> None:
    created = api.post("/api/v1/tickets", json={"kb": "shop", "question": "收货地址写错了怎么改", "customer": "王女士"})
    assert created.status_code == 202, created.text
    ticket_id = created.json()["ticket"]

    def answered() -> bool:
        return api.get(f"/api/v1/tickets/{ticket_id}").json()["questions"][0]["state"] == "answered"

    wait_until(answered, timeout=60)
    ticket = api.get(f"/api/v1/tickets/{ticket_id}").json()
    assert ticket["customer"] == "王女士"
    assert ticket["questions"][0]["answer"]["external_id"] == "address"

    follow_up = api.post(f"/api/v1/tickets/{ticket_id}/questions", json={"question": "发货以后还能改吗"})
    assert follow_up.status_code == 202
    wait_until(lambda: all(q["state"] == "answered"
                           for q in api.get(f"/api/v1/tickets/{ticket_id}").json()["questions"]), timeout=60)

    handed = api.post(f"/api/v1/tickets/{ticket_id}/handoff")
    assert handed.status_code == 200 and handed.json()["status"] == "handed_off"
    listed = api.get("/api/v1/tickets", params={"status": "handed_off"}).json()
    assert [t["id"] for t in listed["results"]] == [ticket_id]
    resolved = api.post(f"/api/v1/tickets/{ticket_id}/resolve")
    assert resolved.json()["status"] == "resolved"
    assert api.post(f"/api/v1/tickets/{ticket_id}/questions", json={"question": "还有问题"}).status_code == 400


def test_feedback_is_recorded_and_validated(api: httpx.Client, shop: KnowledgeBase,
                                            rerank_worker: WorkerProcess) -> None:
    body = api.post("/api/v1/ask", json={"kb": "shop", "question": "How do I delete my account?"}).json()
    other = FaqEntry.objects.get(kb=shop, external_id="reset-password")
    ok = api.post("/api/v1/feedback", json={"ticket": body["ticket"], "question_id": body["question_id"],
                                            "helpful": False, "chosen_entry": other.pk, "comment": "wrong one"})
    assert ok.status_code == 201, ok.text
    feedback = Feedback.objects.get()
    assert (feedback.helpful, feedback.chosen_entry_id, feedback.source) == (False, other.pk, "customer")

    foreign = make_kb("elsewhere", [{"question": "Unrelated"}]).entries.get()
    bad = api.post("/api/v1/feedback", json={"ticket": body["ticket"], "question_id": body["question_id"],
                                             "chosen_entry": foreign.pk})
    assert bad.status_code == 400 and "chosen_entry" in bad.json()["error"]["details"]["fields"]
    assert Feedback.objects.count() == 1


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"kb": "shop"}, "question"),
        ({"kb": "shop", "question": ""}, "question"),
        ({"kb": "shop", "question": " \t\n "}, "question"),
        ({"kb": "shop", "question": "x" * 100_000}, "question"),
        ({"kb": "shop", "question": 42}, "question"),
        ({"kb": "shop", "question": ["a"]}, "question"),
        ({"kb": "shop", "question": "hello\x00world"}, "question"),
        ({"kb": "shop", "question": "ok", "top_n": "many"}, "top_n"),
        ({"kb": "shop", "question": "ok", "filters": "tags"}, "filters"),
        ({"kb": "'; DROP TABLE knowledge_faqentry; --", "question": "ok"}, "kb"),
        ({"kb": "<script>alert(1)</script>", "question": "ok"}, "kb"),
    ],
)
def test_bad_ask_input_is_a_400_in_the_error_shape(api: httpx.Client, payload: dict, field: str) -> None:
    response = api.post("/api/v1/ask", json=payload)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid" and field in error["details"]["fields"]
    assert Question.objects.count() == 0 and Ticket.objects.count() == 0


def test_bad_json_unknown_kb_and_sql_text(api: httpx.Client, rerank_worker: WorkerProcess) -> None:
    bad_json = api.post("/api/v1/ask", content=b'{"kb": "shop", "question": ',
                        headers={"Content-Type": "application/json"})
    assert bad_json.status_code == 400 and bad_json.json()["error"]["code"] == "parse_error"
    unknown = api.post("/api/v1/ask", json={"kb": "nope", "question": "hello"})
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "not_found"
    # SQL-looking text is a question like any other: answered, stored verbatim, nothing executed.
    sql = "' OR 1=1; DROP TABLE knowledge_faqentry; --"
    answered = api.post("/api/v1/ask", json={"kb": "shop", "question": sql})
    assert answered.status_code == 200
    assert Question.objects.get(pk=answered.json()["question_id"]).text == sql
    assert FaqEntry.objects.count() == 6


def test_widget_key_is_bound_to_its_kb_origin_and_scopes(live_server: object, shop: KnowledgeBase,
                                                         rerank_worker: WorkerProcess) -> None:
    _, widget = api_key_create(name="widget", kind=ApiKey.Kind.PUBLISHABLE, kb=shop,
                               allowed_origins=["https://shop.example"])
    make_kb("other", [{"question": "Secret internal FAQ"}])
    base = str(live_server.url)  # type: ignore[attr-defined]
    headers = {"X-Api-Key": widget, "Origin": "https://shop.example"}
    with httpx.Client(base_url=base, headers=headers, timeout=60) as client:
        assert client.post("/api/v1/ask", json={"kb": "shop", "question": "退款多久到账"}).status_code == 200
        assert client.post("/api/v1/ask", json={"kb": "other", "question": "secret"}).status_code == 404
        assert client.post("/api/v1/kbs/shop/entries", json={"question": "new"}).status_code in {403, 404}
        assert client.get("/api/v1/tickets").status_code == 403
        assert client.post("/v1/rerank", json={"query": "q", "documents": ["d"]}).status_code == 403
        wrong_origin = client.post("/api/v1/ask", json={"kb": "shop", "question": "hi"},
                                   headers={"Origin": "https://evil.example"})
        assert wrong_origin.status_code == 403 and wrong_origin.json()["error"]["code"] == "permission_denied"
    anonymous = httpx.post(f"{base}/api/v1/ask", json={"kb": "shop", "question": "hi"})
    assert anonymous.status_code == 401 and anonymous.json()["error"]["code"] == "not_authenticated"
    revoked_key = ApiKey.objects.get(kind="publishable")
    revoked_key.revoked_at = revoked_key.created_at
    revoked_key.save()
    gone = httpx.post(f"{base}/api/v1/ask", json={"kb": "shop", "question": "hi"}, headers=headers)
    assert gone.status_code == 401


def test_throttling_answers_429_with_retry_after(api: httpx.Client, settings: Settings,
                                                 rerank_worker: WorkerProcess) -> None:
    settings.KB_THROTTLE_RATE = "3/min"
    statuses = [api.post("/api/v1/ask", json={"kb": "shop", "question": "hello"}).status_code for _ in range(4)]
    assert statuses[:3] == [200, 200, 200]
    limited = api.post("/api/v1/ask", json={"kb": "shop", "question": "hello"})
    assert limited.status_code == 429
    assert int(limited.headers["Retry-After"]) > 0
    assert limited.json()["error"]["code"] == "throttled"


def test_widget_origins_get_cors_from_their_publishable_key(live_server: object, shop: KnowledgeBase) -> None:
    url = f"{live_server.url}/api/v1/ask"  # type: ignore[attr-defined]
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "x-api-key,content-type"}

    def allows(origin: str) -> bool:
        response = httpx.options(url, headers={"Origin": origin, **preflight})
        assert response.headers.get("access-control-allow-origin") in (None, origin)
        return "access-control-allow-origin" in response.headers

    assert not allows("https://shop.example")  # no key lists it yet (and the answer is remembered a while)
    key, _ = api_key_create(name="widget", kind=ApiKey.Kind.PUBLISHABLE, kb=shop,
                            allowed_origins=["https://shop.example"])
    assert allows("https://shop.example")  # a saved key is seen at once, not after the remembered answer
    assert "x-api-key" in httpx.options(url, headers={"Origin": "https://shop.example", **preflight}).headers.get(
        "access-control-allow-headers", "")
    assert not allows("https://evil.example")
    api_key_revoke(key=key)
    assert not allows("https://shop.example")
