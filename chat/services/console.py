"""What a support agent does in the console. Verdicts on answers (helpful, a better alternative,
copied) are agent Feedback, so the knowledge analytics see what agents had to fix; replies and
ticket changes are the ticket's conversation (``chat.services.messages``)."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError

from chat.models import Feedback, Message, Question, Ticket
from chat.services.messages import agent_message_send
from chat.services.tickets import feedback_create, ticket_hand_off, ticket_resolve
from knowledge.cases.services import regression_case_add, regression_case_clean
from knowledge.models import CaseExpect, CaseSource, FaqEntry, RegressionCase


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


def agent_entry_send(*, question: Question, agent: Any, entry_id: int, reply: str) -> Message:
    """Send a shown entry's answer (possibly edited) to the customer: "agent used entry X"."""
    if entry_id not in _shown_entry_ids(question):
        raise ValidationError({"entry": ["send one of the entries shown for this question"]})
    entry = FaqEntry.objects.filter(pk=entry_id, kb_id=question.ticket.kb_id).first()
    if entry is None:
        raise ValidationError({"entry": ["no such entry in this knowledge base"]})
    return agent_message_send(ticket=question.ticket, body=reply, via=Message.Via.CONSOLE, author=agent, entry=entry)


def agent_reply_send(*, ticket: Ticket, agent: Any, reply: str) -> Message:
    """A free-text reply: part of the conversation, not feedback on any entry."""
    return agent_message_send(ticket=ticket, body=reply, via=Message.Via.CONSOLE, author=agent)


def agent_ticket_resolve(*, ticket: Ticket, agent: Any) -> Ticket:
    return ticket_resolve(ticket=ticket, resolved_by=agent, via=Message.Via.CONSOLE)


def agent_ticket_hand_off(*, ticket: Ticket, agent: Any) -> Ticket:
    return ticket_hand_off(ticket=ticket, via=Message.Via.CONSOLE, by=agent)


def case_candidates(*, question: Question) -> dict[int, str]:
    """Entries the agent said answer this question: a better alternative picked (the top answer was not
    helpful), or an entry's answer sent on its ticket. Entry id → its question."""
    chosen = {f.chosen_entry.pk: f.chosen_entry.question for f in question.feedback.all()
              if f.source == Feedback.Source.AGENT and f.helpful is False and f.chosen_entry is not None}
    sent = {m.entry.pk: m.entry.question for m in question.ticket.messages.all()
            if m.entry is not None and m.author_id is not None}
    return {**sent, **chosen}


def agent_case_keep(*, question: Question, agent: Any, entry_id: int) -> RegressionCase:
    """One click, "keep this as a check": the question as the customer asked it must from now on be
    answered with the entry the agent chose for it."""
    candidates = case_candidates(question=question)
    if entry_id not in candidates:
        raise ValidationError({"entry": ["keep an entry you picked or sent for this question"]})
    picked = any(f.chosen_entry_id == entry_id and f.helpful is False for f in question.feedback.all())
    case = regression_case_clean(kb=question.ticket.kb, question=question.text, expect=CaseExpect.ANSWER,
                                 entry_id=entry_id,
                                 note=f"Kept by {getattr(agent, 'username', 'an agent')} in the console")
    kept, _ = regression_case_add(
        kb=question.ticket.kb, case=case, created_by=agent,
        source=CaseSource.CONSOLE_FEEDBACK if picked else CaseSource.CONSOLE_RESOLVED,
        source_ref=f"ticket {question.ticket.public_id}, question {question.pk}")
    return kept
