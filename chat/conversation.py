"""Reads of a ticket's conversation: the engine's turns (``Question`` rows) and people's messages and
events (``Message`` rows), in time order, in the one shape the API, the widget and the console share."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from django.db import connection
from django.db.models import Prefetch, prefetch_related_objects

from chat.models import Message, Question, Ticket
from knowledge.models import FaqEntry

ANSWER_KEYS = ("answer", "alternatives", "rerank")


def message_item(message: Message) -> dict[str, Any]:
    item: dict[str, Any] = {"id": f"m{message.pk}", "seq": message.pk, "kind": message.kind,
                            "at": message.created_at, "via": message.via}
    if message.kind == Message.Kind.EVENT:
        item["event"] = message.event
        if message.body:
            item["text"] = message.body
    else:
        item["text"] = message.body
    if message.kind == Message.Kind.AGENT:
        item["author"] = message.author_name
        item["entry"] = None if message.entry is None else {
            "id": message.entry.pk, "external_id": message.entry.external_id, "question": message.entry.question,
            "edited": bool(message.entry_edited)}
    return item


def question_items(question: Question) -> list[dict[str, Any]]:
    """The customer's question, and the engine's answer once there is one."""
    items: list[dict[str, Any]] = [{"id": f"q{question.pk}", "kind": "question", "at": question.created_at,
                                    "question_id": question.pk, "text": question.text}]
    if question.state == Question.State.ANSWERED:
        items.append({"id": f"a{question.pk}", "kind": "answer", "at": question.answered_at or question.created_at,
                      "question_id": question.pk, "decision": question.decision,
                      **{key: question.response.get(key) for key in ANSWER_KEYS}})
    return items


@dataclass(frozen=True)
class TicketPoll:
    kb_id: int
    status: str
    assigned: bool
    messages: list[Message]


# A widget's poll is the request hundreds of open widgets repeat every few seconds: the ticket and what
# came after the cursor in one statement, one round trip and no ORM query compilation (which was most
# of a poll's cost). The ticket row comes back once even with no message after the cursor.
_POLL = """
SELECT t.kb_id, t.status, t.assigned_to_id IS NOT NULL, m.id, m.kind, m.body, m.event, m.via, m.created_at,
       m.author_name, m.entry_edited, e.id, e.external_id, e.question
FROM chat_ticket t
LEFT JOIN chat_message m ON m.ticket_id = t.id AND m.id > %(after)s
LEFT JOIN knowledge_faqentry e ON e.id = m.entry_id
WHERE t.public_id = %(ticket)s
ORDER BY m.id"""


def ticket_poll(*, public_id: uuid.UUID | str, after: int = 0) -> TicketPoll | None:
    """The ticket's state and its messages after the cursor, oldest first; None for an unknown ticket."""
    with connection.cursor() as cursor:
        cursor.execute(_POLL, {"ticket": public_id, "after": after})
        rows = cursor.fetchall()
    if not rows:
        return None
    messages = [
        Message(pk=row[3], kind=row[4], body=row[5], event=row[6], via=row[7], created_at=row[8], author_name=row[9],
                entry_edited=row[10],
                entry=None if row[11] is None else FaqEntry(pk=row[11], external_id=row[12], question=row[13]))
        for row in rows if row[3] is not None
    ]
    kb_id, status, assigned = rows[0][:3]
    return TicketPoll(kb_id=kb_id, status=status, assigned=assigned, messages=messages)


def ticket_conversation(*, ticket: Ticket) -> list[dict[str, Any]]:
    """Everything said and done on the ticket, oldest first. Uses prefetched ``questions`` and
    ``messages`` when the caller has them (the console's ticket page)."""
    items = [item for question in ticket.questions.all() for item in question_items(question)]
    items += [message_item(message) for message in ticket.messages.all()]
    # A question and its answer, then a message sent in the same instant: stable within a source.
    order = {"question": 0, "answer": 1}
    return sorted(items, key=lambda item: (item["at"], order.get(item["kind"], 2)))


def ticket_conversation_prefetch(ticket: Ticket) -> Ticket:
    prefetch_related_objects([ticket], Prefetch("questions", queryset=Question.objects.order_by("created_at", "pk")),
                             Prefetch("messages", queryset=Message.objects.select_related("entry").order_by("pk")))
    return ticket


def ticket_cursor(items: list[dict[str, Any]]) -> int:
    """The poll cursor: the newest message's id (engine turns come back in the ask's own response)."""
    return max((item["seq"] for item in items if "seq" in item), default=0)
