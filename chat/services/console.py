"""What a support agent does in the console. Every action is recorded as agent Feedback, so the
knowledge analytics see what agents had to fix, not only what customers said."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction

from chat.models import Feedback, Question, Ticket
from chat.services.tickets import feedback_create, ticket_hand_off, ticket_resolve

MAX_REPLY_CHARS = 4000


def _top_entry_id(question: Question) -> int | None:
    answer = (question.response or {}).get("answer") or {}
    return answer.get("id")


def _shown_entry_ids(question: Question) -> set[int]:
    response = question.response or {}
    shown = [response.get("answer"), *(response.get("alternatives") or [])]
    return {item["id"] for item in shown if item}


def agent_answer_rate(*, question: Question, agent: Any, helpful: bool) -> Feedback:
    """The agent's verdict on the suggested (top) answer."""
    return feedback_create(question=question, helpful=helpful, chosen_entry_id=None, comment="",
                           source=Feedback.Source.AGENT, created_by=agent)


def agent_alternative_pick(*, question: Question, agent: Any, entry_id: int) -> Feedback:
    """The agent says another shown entry is the right one: the top answer was not."""
    if entry_id not in _shown_entry_ids(question) or entry_id == _top_entry_id(question):
        raise ValidationError({"entry": ["pick one of the alternatives shown for this question"]})
    return feedback_create(question=question, helpful=False, chosen_entry_id=entry_id,
                           comment="Picked a better alternative", source=Feedback.Source.AGENT, created_by=agent)


def agent_answer_copy(*, question: Question, agent: Any, entry_id: int) -> Feedback:
    if entry_id not in _shown_entry_ids(question):
        raise ValidationError({"entry": ["copy one of the entries shown for this question"]})
    return feedback_create(question=question, helpful=None, chosen_entry_id=entry_id,
                           comment="Copied the answer", source=Feedback.Source.AGENT, created_by=agent)


@transaction.atomic
def agent_reply_send(*, question: Question, agent: Any, entry_id: int, reply: str) -> Feedback:
    """Send an entry's answer (possibly edited) to the customer.

    Recorded as agent feedback with the chosen entry and the reply text; ``helpful`` says whether
    the sent entry was the one we had put first. The ticket is assigned to the agent who replied."""
    reply = reply.strip()
    if not reply:
        raise ValidationError({"reply": ["the reply is empty"]})
    if len(reply) > MAX_REPLY_CHARS:
        raise ValidationError({"reply": [f"at most {MAX_REPLY_CHARS} characters"]})
    if entry_id not in _shown_entry_ids(question):
        raise ValidationError({"entry": ["send one of the entries shown for this question"]})
    feedback = feedback_create(question=question, helpful=entry_id == _top_entry_id(question),
                               chosen_entry_id=entry_id, comment=reply, source=Feedback.Source.AGENT,
                               created_by=agent)
    if getattr(agent, "pk", None):
        Ticket.objects.filter(pk=question.ticket_id, assigned_to__isnull=True).update(assigned_to=agent)
    return feedback


def _ticket_note(ticket: Ticket, agent: Any, note: str) -> None:
    latest = ticket.questions.order_by("-created_at", "-pk").first()
    if latest is not None:
        feedback_create(question=latest, helpful=None, chosen_entry_id=None, comment=note,
                        source=Feedback.Source.AGENT, created_by=agent)


@transaction.atomic
def agent_ticket_resolve(*, ticket: Ticket, agent: Any) -> Ticket:
    was = ticket.status
    ticket = ticket_resolve(ticket=ticket, resolved_by=agent)
    if was != Ticket.Status.RESOLVED:
        _ticket_note(ticket, agent, "Resolved the ticket")
    return ticket


@transaction.atomic
def agent_ticket_hand_off(*, ticket: Ticket, agent: Any) -> Ticket:
    was = ticket.status
    ticket = ticket_hand_off(ticket=ticket)
    if was != Ticket.Status.HANDED_OFF:
        _ticket_note(ticket, agent, "Handed the ticket off")
    return ticket
