"""Handing conversations to the team's own helpdesk: signed POSTs of a ticket and its conversation.

Signature (as Stripe and GitHub do it): ``X-Kbservice-Signature: t=<unix seconds>,v1=<hex>`` where
``v1 = HMAC-SHA256(secret, f"{t}." + raw body)``. The timestamp is signed with the body, so a receiver
that refuses old timestamps also refuses replays. ``X-Kbservice-Delivery`` is the same on every retry
of one event: receivers use it to drop duplicates."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from typing import Any

import httpx
from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from chat.conversation import message_item, ticket_conversation, ticket_conversation_prefetch
from chat.models import HelpdeskWebhook, Message, Ticket, WebhookAttempt, WebhookDelivery

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Kbservice-Signature"
EVENT_HANDED_OFF = "ticket.handed_off"
EVENT_MESSAGE = "ticket.customer_message"


class WebhookFailed(Exception):
    """The helpdesk did not take the delivery (no answer, or not a 2xx): the task retries."""


def webhook_signature(*, secret: str, timestamp: int, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def webhook_payload(*, ticket: Ticket, message: Message, event: str, delivery_id: int) -> dict[str, Any]:
    ticket_conversation_prefetch(ticket)
    return {
        "event": event, "delivery": delivery_id,
        "ticket": {"id": str(ticket.public_id), "kb": ticket.kb.slug, "status": ticket.status,
                   "customer": ticket.customer, "channel": ticket.channel, "created_at": ticket.created_at,
                   "handed_off_at": ticket.handed_off_at},
        "message": message_item(message),
        "messages": ticket_conversation(ticket=ticket),
        "reply": {"method": "POST", "path": f"/api/v1/tickets/{ticket.public_id}/replies",
                  "body": {"text": "…", "author": "…"}, "scope": "tickets"},
    }


def webhook_delivery_queue(*, ticket_id: int, message_id: int) -> WebhookDelivery | None:
    """After a hand-off or a customer message commits: record the event and send it in the background."""
    ticket = Ticket.objects.select_related("kb").get(pk=ticket_id)
    webhook = HelpdeskWebhook.objects.filter(kb_id=ticket.kb_id, active=True).first()
    if webhook is None:
        return None
    message = Message.objects.select_related("entry").get(pk=message_id)
    event = EVENT_MESSAGE if message.kind == Message.Kind.CUSTOMER else EVENT_HANDED_OFF
    with transaction.atomic():
        delivery = WebhookDelivery.objects.create(webhook=webhook, ticket=ticket, message=message, event=event,
                                                  payload={})
        # Through JSON once here, so the stored payload is exactly the body every attempt sends.
        payload = json.loads(json.dumps(webhook_payload(ticket=ticket, message=message, event=event,
                                                        delivery_id=delivery.pk), cls=DjangoJSONEncoder))
        WebhookDelivery.objects.filter(pk=delivery.pk).update(payload=payload)
    transaction.on_commit(lambda: _enqueue(delivery.pk))
    return delivery


def _enqueue(delivery_id: int) -> None:
    from chat.tasks import webhook_deliver_task

    try:
        webhook_deliver_task.apply_async(kwargs={"delivery_id": delivery_id}, queue=settings.KB_WEBHOOK_QUEUE)
    except Exception:  # broker down: the delivery stays pending, visible in the admin
        logger.warning("could not queue webhook delivery %s", delivery_id, exc_info=True)


def webhook_deliver(*, delivery_id: int) -> bool:
    """One attempt. True when delivered (now or before); raises WebhookFailed to be retried."""
    delivery = WebhookDelivery.objects.select_related("webhook").filter(pk=delivery_id).first()
    if delivery is None or delivery.status != WebhookDelivery.Status.PENDING:
        return delivery is not None and delivery.status == WebhookDelivery.Status.DELIVERED
    body = json.dumps(delivery.payload, ensure_ascii=False, separators=(",", ":")).encode()
    timestamp = int(time.time())
    signature = webhook_signature(secret=delivery.webhook.secret, timestamp=timestamp, body=body)
    headers = {
        "Content-Type": "application/json; charset=utf-8", "User-Agent": "kbservice-webhook/1",
        "X-Kbservice-Event": delivery.event, "X-Kbservice-Delivery": str(delivery.pk),
        SIGNATURE_HEADER: f"t={timestamp},v1={signature}",
    }
    WebhookDelivery.objects.filter(pk=delivery.pk).update(attempts=F("attempts") + 1)
    started = time.perf_counter()
    status_code, error = None, ""
    try:
        response = httpx.post(delivery.webhook.url, content=body, headers=headers,
                              timeout=settings.KB_WEBHOOK_TIMEOUT, follow_redirects=False)
        status_code = response.status_code
        if not response.is_success:
            error = f"HTTP {status_code}: {response.text[:200]}"
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {exc}"[:500]
    WebhookAttempt.objects.create(delivery=delivery, status_code=status_code, error=error,
                                  duration_ms=round((time.perf_counter() - started) * 1000, 1))
    if error:
        raise WebhookFailed(error)
    WebhookDelivery.objects.filter(pk=delivery.pk, status=WebhookDelivery.Status.PENDING).update(
        status=WebhookDelivery.Status.DELIVERED, delivered_at=timezone.now())
    return True


def webhook_delivery_give_up(*, delivery_id: int) -> None:
    WebhookDelivery.objects.filter(pk=delivery_id, status=WebhookDelivery.Status.PENDING).update(
        status=WebhookDelivery.Status.FAILED)
