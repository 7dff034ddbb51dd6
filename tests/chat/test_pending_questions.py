"""Questions whose answer never came: re-queued by the beat sweep, or handed to a person."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from chat.models import AskLog, Message, Question, Ticket
from chat.services.ask import ask, question_params
from chat.services.tickets import questions_pending_sweep, ticket_create
from knowledge.models import KnowledgeBase
from tests.conftest import WorkerProcess
from tests.helpers import wait_until

pytestmark = pytest.mark.worker

RETRY_AFTER, GIVE_UP_AFTER = 180, 900


def asked(kb: KnowledgeBase, text: str, *, seconds_ago: float) -> Question:
    """A ticket question whose answer task never reached a worker (none was queued)."""
    ticket = ticket_create(kb=kb, customer="", channel="widget")
    question = Question.objects.create(ticket=ticket, text=text, normalized="")
    Question.objects.filter(pk=question.pk).update(created_at=timezone.now() - timedelta(seconds=seconds_ago))
    return question


def test_a_question_whose_task_was_lost_is_queued_again_and_answered(
        shop: KnowledgeBase, cpu_worker: WorkerProcess, rerank_worker: WorkerProcess) -> None:
    lost = asked(shop, "收货地址写错了怎么改", seconds_ago=RETRY_AFTER + 20)
    recent = asked(shop, "发货以后还能改吗", seconds_ago=5)

    retried, handed_off = questions_pending_sweep(retry_after=RETRY_AFTER, give_up_after=GIVE_UP_AFTER)

    assert (retried, handed_off) == ([lost.pk], [])
    wait_until(lambda: Question.objects.get(pk=lost.pk).state == Question.State.ANSWERED, timeout=60)
    assert Question.objects.get(pk=lost.pk).response["answer"]["external_id"] == "address"
    assert Question.objects.get(pk=recent.pk).state == Question.State.PENDING  # its own task may still come
    assert AskLog.objects.filter(question=lost).count() == 1


def test_re_queued_once_per_window_and_past_hope_handed_to_a_person(shop: KnowledgeBase) -> None:
    late = asked(shop, "退款多久到账", seconds_ago=RETRY_AFTER + 20)
    hopeless = asked(shop, "发票怎么开", seconds_ago=GIVE_UP_AFTER + 20)
    resolved = asked(shop, "怎么联系客服", seconds_ago=GIVE_UP_AFTER + 20)
    Ticket.objects.filter(pk=resolved.ticket_id).update(status=Ticket.Status.RESOLVED)

    first = questions_pending_sweep(retry_after=RETRY_AFTER, give_up_after=GIVE_UP_AFTER)
    again = questions_pending_sweep(retry_after=RETRY_AFTER, give_up_after=GIVE_UP_AFTER)

    assert first == ([late.pk], sorted([hopeless.pk, resolved.pk]))
    assert again == ([], [])  # no worker answered meanwhile: not queued a second time within the window
    assert Question.objects.get(pk=late.pk).state == Question.State.PENDING
    assert Question.objects.get(pk=hopeless.pk).state == Question.State.FAILED
    ticket = Ticket.objects.get(pk=hopeless.ticket_id)
    assert ticket.status == Ticket.Status.HANDED_OFF
    assert list(ticket.messages.values_list("kind", "event", "via")) == [
        (Message.Kind.EVENT, Message.Event.HANDED_OFF, Message.Via.SYSTEM)]
    assert Ticket.objects.get(pk=resolved.ticket_id).status == Ticket.Status.RESOLVED
    assert not Message.objects.filter(ticket_id=resolved.ticket_id).exists()


def test_two_deliveries_of_one_question_record_one_answer(shop: KnowledgeBase, rerank_worker: WorkerProcess) -> None:
    question = asked(shop, "收货地址写错了怎么改", seconds_ago=RETRY_AFTER + 20)
    ticket = question.ticket
    # Both deliveries read the question while it was pending, as two workers racing would.
    for _ in range(2):
        ask(kb=shop, params=question_params(question), ticket=ticket, channel=ticket.channel, pending=question)

    assert Question.objects.get(pk=question.pk).state == Question.State.ANSWERED
    assert AskLog.objects.filter(question=question).count() == 1
