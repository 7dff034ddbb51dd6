"""A ticket's conversation: what customers and agents say after the engine, and what happens to it."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from chat.models import Message, Ticket
from knowledge.models import FaqEntry
from knowledge.text import strip_control_characters

MAX_MESSAGE_CHARS = 4000


def message_body_clean(*, text: Any, field: str = "body", limit: int = MAX_MESSAGE_CHARS) -> str:
    """The text as written, trimmed; raises ValidationError (never cuts it)."""
    if not isinstance(text, str):
        raise ValidationError({field: ["must be text"]})
    if strip_control_characters(text) != text:
        raise ValidationError({field: ["contains control characters"]})
    text = text.strip()
    if not text:
        raise ValidationError({field: ["must not be empty"]})
    if len(text) > limit:
        raise ValidationError({field: [f"is {len(text)} characters; the limit is {limit}"]})
    return text


@transaction.atomic
def message_create(
    *, ticket: Ticket, kind: str, via: str, body: str = "", event: str = "", entry: FaqEntry | None = None,
    entry_edited: bool | None = None, author: Any = None, author_name: str = "",
) -> Message:
    """Add a message to a ticket.

    The UPDATE takes the ticket's row lock before the INSERT draws an id, and holds it to commit:
    two messages on one ticket commit in id order, which is what makes the id a poll cursor."""
    Ticket.objects.filter(pk=ticket.pk).update(updated_at=timezone.now())
    message = Message.objects.create(
        ticket=ticket, kind=kind, via=via, body=body, event=event, entry=entry, entry_edited=entry_edited,
        author=author if getattr(author, "pk", None) else None, author_name=author_name,
    )
    if kind == Message.Kind.CUSTOMER or event == Message.Event.HANDED_OFF:
        transaction.on_commit(lambda: _notify_helpdesk(ticket.pk, message.pk))
    return message


def _notify_helpdesk(ticket_id: int, message_id: int) -> None:
    # Local import: the webhook service enqueues its task, and the task module imports services.
    from chat.services.webhooks import webhook_delivery_queue

    webhook_delivery_queue(ticket_id=ticket_id, message_id=message_id)


def customer_message_send(*, ticket: Ticket, text: Any, via: str) -> Message:
    """The customer writes to the person who took over (the engine is not asked again)."""
    body = message_body_clean(text=text, field="text", limit=settings.KB_MAX_QUESTION_CHARS)
    if ticket.status == Ticket.Status.RESOLVED:
        raise ValidationError({"ticket": ["is resolved; open a new ticket"]})
    return message_create(ticket=ticket, kind=Message.Kind.CUSTOMER, via=via, body=body)


def _display_name(user: Any) -> str:
    return (user.get_full_name() or user.get_username()) if getattr(user, "pk", None) else ""


@transaction.atomic
def ticket_assign(*, ticket: Ticket, agent: Any, by: Any, via: str = Message.Via.CONSOLE) -> Ticket:
    """Give the ticket to ``agent`` (a claim when ``by`` is the agent); an event says who."""
    if not getattr(agent, "pk", None) or not agent.is_active:
        raise ValidationError({"agent": ["no such active agent"]})
    updated = Ticket.objects.filter(pk=ticket.pk).exclude(assigned_to=agent).update(assigned_to=agent)
    ticket.assigned_to = agent
    if updated:
        message_create(ticket=ticket, kind=Message.Kind.EVENT, event=Message.Event.ASSIGNED, via=via,
                       body=_display_name(agent), author=by, author_name=_display_name(by))
    return ticket


@transaction.atomic
def ticket_unassign(*, ticket: Ticket, by: Any, via: str = Message.Via.CONSOLE) -> Ticket:
    updated = Ticket.objects.filter(pk=ticket.pk, assigned_to__isnull=False).update(assigned_to=None)
    ticket.assigned_to = None
    if updated:
        message_create(ticket=ticket, kind=Message.Kind.EVENT, event=Message.Event.UNASSIGNED, via=via,
                       author=by, author_name=_display_name(by))
    return ticket


@transaction.atomic
def agent_message_send(
    *, ticket: Ticket, body: Any, via: str, author: Any = None, author_name: str = "",
    entry: FaqEntry | None = None,
) -> Message:
    """A person's reply to the customer: free text, or an FAQ entry's answer as is or edited.

    Sending an entry is recorded as the agent having used it, never as a rating of it. A console
    agent who replies to an unassigned ticket takes it."""
    text = message_body_clean(text=body, field="reply")
    if ticket.status == Ticket.Status.RESOLVED:
        raise ValidationError({"ticket": ["is resolved"]})
    if getattr(author, "pk", None) and ticket.assigned_to_id is None:
        ticket_assign(ticket=ticket, agent=author, by=author, via=via)
    return message_create(
        ticket=ticket, kind=Message.Kind.AGENT, via=via, body=text, entry=entry,
        entry_edited=None if entry is None else text != entry.answer.strip(), author=author,
        author_name=author_name or _display_name(author),
    )
