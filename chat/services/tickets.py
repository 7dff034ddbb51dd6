"""Tickets: asynchronous questions, follow-ups, hand-off to a person, resolution, feedback."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from chat.models import Feedback, Message, Question, Ticket
from chat.services.ask import AskParams, ask, question_params
from chat.services.messages import message_create
from knowledge.models import FaqEntry

logger = logging.getLogger(__name__)


@transaction.atomic
def question_submit(*, ticket: Ticket, params: AskParams) -> Question:
    """Queue a question on a ticket; a worker answers it (see ``question_answer``)."""
    question = Question.objects.create(
        ticket=ticket, text=params.question, normalized="", instruction=params.instruction,
        filters=params.filters.as_dict(),
        top_n=params.top_n,
    )
    Ticket.objects.filter(pk=ticket.pk).update(updated_at=timezone.now())
    transaction.on_commit(lambda: _enqueue_answer(question.pk))
    return question


def _enqueue_answer(question_id: int) -> None:
    from chat.tasks import question_answer_task

    try:
        question_answer_task.delay(question_id=question_id)
    except Exception:  # broker down: answer here rather than leave the customer waiting forever
        logger.warning("broker unavailable; answering question %s inline", question_id, exc_info=True)
        question_answer(question_id=question_id)


def question_answer(*, question_id: int) -> bool:
    """Answer a pending question. Claimed by a conditional read of ``state``: a redelivered task
    finds it answered and does nothing."""
    pending = Question.objects.select_related("ticket__kb").filter(pk=question_id, state=Question.State.PENDING)
    question = pending.first()
    if question is None:
        return False
    ticket = question.ticket
    ask(kb=ticket.kb, params=question_params(question), ticket=ticket, channel=ticket.channel, pending=question)
    return True


def questions_pending_sweep(*, retry_after: float, give_up_after: float) -> tuple[list[int], list[int]]:
    """The questions whose answer never came, as Celery beat finds them: a task can be lost (a worker
    killed while Redis hands it a message) or fail. Pending past ``retry_after`` seconds: queued again,
    at most once per ``retry_after`` (a backed-up queue is not flooded; a duplicate is harmless, the
    first answer wins). Past ``give_up_after``: marked failed and the ticket handed to a person, so the
    customer is not left waiting on a machine that will not answer. Returns (re-queued, handed off)."""
    now = timezone.now()
    stale = Question.objects.filter(state=Question.State.PENDING, created_at__lt=now - timedelta(seconds=retry_after))
    hopeless = stale.filter(created_at__lt=now - timedelta(seconds=give_up_after))
    handed_off = [question.pk for question in hopeless.select_related("ticket") if _question_give_up(question)]
    retried = []
    for question_id in stale.exclude(pk__in=handed_off).values_list("pk", flat=True):
        if cache.add(f"question-requeued:{question_id}", 1, timeout=int(retry_after)):
            _enqueue_answer(question_id)
            retried.append(question_id)
    if retried or handed_off:
        logger.warning("pending questions: re-queued %s, handed off %s", retried, handed_off)
    return retried, handed_off


@transaction.atomic
def _question_give_up(question: Question) -> bool:
    if not Question.objects.filter(pk=question.pk, state=Question.State.PENDING).update(state=Question.State.FAILED):
        return False  # answered meanwhile
    if question.ticket.status != Ticket.Status.RESOLVED:
        ticket_hand_off(ticket=question.ticket, via=Message.Via.SYSTEM)
    return True


def ticket_create(*, kb: Any, customer: str, channel: str) -> Ticket:
    return Ticket.objects.create(kb=kb, customer=customer, channel=channel)


@transaction.atomic
def ticket_hand_off(*, ticket: Ticket, via: str = Message.Via.API, by: Any = None) -> Ticket:
    if ticket.status == Ticket.Status.RESOLVED:
        raise ValidationError({"status": ["this ticket is resolved; open a new one"]})
    # Conditional: two "Talk to a person" clicks (or a click and an agent) record one hand-off.
    now = timezone.now()
    if Ticket.objects.filter(pk=ticket.pk).exclude(status=Ticket.Status.HANDED_OFF).update(
            status=Ticket.Status.HANDED_OFF, handed_off_at=now, updated_at=now):
        ticket.status, ticket.handed_off_at = Ticket.Status.HANDED_OFF, now
        message_create(ticket=ticket, kind=Message.Kind.EVENT, event=Message.Event.HANDED_OFF, via=via, author=by)
    return ticket


@transaction.atomic
def ticket_resolve(*, ticket: Ticket, resolved_by: Any = None, via: str = Message.Via.API) -> Ticket:
    now = timezone.now()
    if Ticket.objects.filter(pk=ticket.pk).exclude(status=Ticket.Status.RESOLVED).update(
            status=Ticket.Status.RESOLVED, resolved_at=now, updated_at=now):
        ticket.status, ticket.resolved_at = Ticket.Status.RESOLVED, now
        if getattr(resolved_by, "pk", None):
            Ticket.objects.filter(pk=ticket.pk, assigned_to__isnull=True).update(assigned_to=resolved_by)
            ticket.assigned_to = ticket.assigned_to or resolved_by
        message_create(ticket=ticket, kind=Message.Kind.EVENT, event=Message.Event.RESOLVED, via=via,
                       author=resolved_by)
    return ticket


def feedback_create(
    *, question: Question, helpful: bool | None, chosen_entry_id: int | None, comment: str, source: str,
    created_by: Any = None,
) -> Feedback:
    if helpful is None and chosen_entry_id is None and not comment.strip():
        raise ValidationError({"helpful": ["give helpful, a chosen entry or a comment"]})
    chosen = None
    if chosen_entry_id is not None:
        chosen = FaqEntry.objects.filter(pk=chosen_entry_id, kb_id=question.ticket.kb_id).first()
        if chosen is None:
            raise ValidationError({"chosen_entry": ["no such entry in this knowledge base"]})
    return Feedback.objects.create(
        question=question, helpful=helpful, chosen_entry=chosen, comment=comment.strip(), source=source,
        created_by=created_by if getattr(created_by, "pk", None) else None,
    )
