"""Hand-off to the team's own helpdesk, against a real local HTTP receiver and a real Celery worker."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from pytest_django.fixtures import Settings

from chat.models import ApiKey, HelpdeskWebhook, Message, WebhookAttempt, WebhookDelivery
from chat.services.keys import api_key_create
from knowledge.models import KnowledgeBase
from tests.conftest import WorkerProcess
from tests.helpers import wait_until

pytestmark = pytest.mark.worker
ORIGIN = "https://shop.example"
SECRET = "whsec_test_0123456789"
QUEUE = "webhooks-test"


@dataclass
class Receiver:
    """A helpdesk's endpoint: records every request, answers with the next planned status (then 200)."""

    url: str
    answers: list[int]
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)


def verify(headers: dict[str, str], body: bytes, *, secret: str, tolerance: int = 300) -> bool:
    """The README's verification snippet, as a receiver would write it."""
    parts = dict(item.split("=", 1) for item in headers["X-Kbservice-Signature"].split(","))
    expected = hmac.new(secret.encode(), f"{parts['t']}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, parts["v1"]) and abs(time.time() - int(parts["t"])) <= tolerance


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver(url="", answers=[])

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # http.server's naming
            body = self.rfile.read(int(self.headers["Content-Length"]))
            state.received.append(({name: value for name, value in self.headers.items()}, body))
            status = state.answers.pop(0) if state.answers else 200
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/kbservice"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def webhook_worker(session_worker: Callable[..., WorkerProcess]) -> Iterator[WorkerProcess]:
    # Its own queue and a half-second back-off base, so retries happen within the test; stopped with
    # this module, not left idle until the session ends.
    worker = session_worker(QUEUE, KB_WEBHOOK_RETRY_SECONDS="0.5", KB_WEBHOOK_MAX_RETRIES="2")
    yield worker
    worker.stop()


def test_hand_off_and_messages_reach_the_helpdesk_signed_retried_and_its_reply_reaches_the_widget(
    live_server: Any, shop: KnowledgeBase, rerank_worker: WorkerProcess, webhook_worker: WorkerProcess,
    receiver: Receiver, settings: Settings,
) -> None:
    """GIVEN a knowledge base with a helpdesk webhook whose receiver first answers 500 WHEN a widget customer
    hands off and writes again THEN each event is POSTed signed, the 500 is retried until delivered, the
    attempts are recorded, and a reply the helpdesk posts back shows in the widget's poll."""
    settings.KB_WEBHOOK_QUEUE = QUEUE
    HelpdeskWebhook.objects.create(kb=shop, url=receiver.url, secret=SECRET)
    receiver.answers = [500]
    _, widget_key = api_key_create(name="widget", kind=ApiKey.Kind.PUBLISHABLE, kb=shop, allowed_origins=[ORIGIN])
    _, helpdesk_key = api_key_create(name="helpdesk", kind=ApiKey.Kind.SECRET, kb=shop, scopes=["tickets"])
    base = str(live_server.url)
    widget = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {widget_key}", "Origin": ORIGIN},
                          timeout=60)
    helpdesk = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {helpdesk_key}"}, timeout=60)

    ticket_id = widget.post("/api/v1/ask", json={"kb": "shop", "question": "退款多久到账"}).json()["ticket"]
    assert widget.post(f"/api/v1/tickets/{ticket_id}/handoff").status_code == 200
    wait_until(lambda: WebhookDelivery.objects.filter(status="delivered").count() == 1, timeout=60)

    assert len(receiver.received) == 2  # the 500, then the retry that was taken
    (first_headers, _), (headers, body) = receiver.received
    assert first_headers["X-Kbservice-Delivery"] == headers["X-Kbservice-Delivery"]
    assert all(verify(h, b, secret=SECRET) for h, b in receiver.received)
    assert not verify(headers, body.replace("退款".encode(), "退货".encode()), secret=SECRET)  # tampering shows
    assert not verify(headers, body, secret="someone else's secret")
    payload = json.loads(body)
    assert (payload["event"], payload["ticket"]["id"], payload["ticket"]["status"]) == (
        "ticket.handed_off", ticket_id, "handed_off")
    assert [item["kind"] for item in payload["messages"]] == ["question", "answer", "event"]
    assert payload["messages"][0]["text"] == "退款多久到账"
    delivery = WebhookDelivery.objects.get()
    assert (delivery.attempts, delivery.event) == (2, "ticket.handed_off")
    assert list(WebhookAttempt.objects.filter(delivery=delivery).values_list("status_code", flat=True)) == [500, 200]

    assert widget.post(f"/api/v1/tickets/{ticket_id}/messages", json={"text": "订单号 8812"}).status_code == 201
    wait_until(lambda: WebhookDelivery.objects.filter(status="delivered").count() == 2, timeout=60)
    headers, body = receiver.received[-1]
    later = json.loads(body)
    assert verify(headers, body, secret=SECRET)
    assert (later["event"], later["message"]["text"]) == ("ticket.customer_message", "订单号 8812")

    # The helpdesk agent answers through the API; the widget's next poll carries it.
    cursor = widget.get(f"/api/v1/tickets/{ticket_id}/messages").json()["cursor"]
    reply = helpdesk.post(f"/api/v1/tickets/{ticket_id}/replies",
                          json={"text": "已为您加急处理。", "author": "Li (Zendesk)"})
    assert reply.status_code == 201, reply.text
    polled = widget.get(f"/api/v1/tickets/{ticket_id}/messages", params={"after": cursor}).json()["messages"]
    assert [(m["kind"], m["text"], m["author"], m["via"]) for m in polled] == [
        ("agent", "已为您加急处理。", "Li (Zendesk)", "helpdesk")]
    # An agent's reply is not sent back to the helpdesk it came from.
    assert WebhookDelivery.objects.count() == 2

    for bad in ({"text": "   "}, {"author": "Li"}, {"text": "x" * 4001}):
        refused = helpdesk.post(f"/api/v1/tickets/{ticket_id}/replies", json=bad)
        assert refused.status_code == 400, bad
    assert widget.post(f"/api/v1/tickets/{ticket_id}/replies", json={"text": "hi"}).status_code == 403
    assert Message.objects.filter(kind="agent").count() == 1
    widget.close()
    helpdesk.close()


def test_a_helpdesk_that_keeps_failing_is_given_up_after_the_retries(
    live_server: Any, shop: KnowledgeBase, rerank_worker: WorkerProcess, webhook_worker: WorkerProcess,
    receiver: Receiver, settings: Settings,
) -> None:
    settings.KB_WEBHOOK_QUEUE = QUEUE
    HelpdeskWebhook.objects.create(kb=shop, url=receiver.url, secret=SECRET)
    receiver.answers = [503, 503, 503, 503]
    _, key = api_key_create(name="server", kind=ApiKey.Kind.SECRET, kb=shop, scopes=["ask"])
    with httpx.Client(base_url=str(live_server.url), headers={"Authorization": f"Bearer {key}"}, timeout=60) as api:
        ticket_id = api.post("/api/v1/ask", json={"kb": "shop", "question": "退款多久到账"}).json()["ticket"]
        api.post(f"/api/v1/tickets/{ticket_id}/handoff")
    wait_until(lambda: WebhookDelivery.objects.filter(status="failed").exists(), timeout=60)
    delivery = WebhookDelivery.objects.get()
    assert delivery.attempts == 3  # the first try and KB_WEBHOOK_MAX_RETRIES=2 retries
    assert list(WebhookAttempt.objects.values_list("status_code", flat=True)) == [503, 503, 503]
