from typing import Any

from celery import shared_task
from django.conf import settings

from chat.services import ask, webhooks


@shared_task(acks_late=True, reject_on_worker_lost=True)
def question_rerank_late_task(*, question_id: int) -> bool:
    return ask.question_rerank_late(question_id=question_id)


@shared_task(acks_late=True, reject_on_worker_lost=True)
def question_answer_task(*, question_id: int) -> bool:
    from chat.services.tickets import question_answer

    return question_answer(question_id=question_id)


@shared_task
def questions_pending_sweep_task() -> dict[str, list[int]]:
    """Celery beat: queue again the questions whose answer never came; hand off the ones past hope."""
    from chat.services.tickets import questions_pending_sweep

    retried, handed_off = questions_pending_sweep(retry_after=settings.KB_QUESTION_RETRY_AFTER,
                                                  give_up_after=settings.KB_QUESTION_GIVE_UP_AFTER)
    return {"retried": retried, "handed_off": handed_off}


@shared_task
def knowledge_base_calibrate_task(*, kb_id: int) -> int | None:
    """The admin's "Calibrate now": the base's own evidence (similar questions, reviewed feedback)."""
    from chat.services.calibration import knowledge_base_calibrate_by_id

    return knowledge_base_calibrate_by_id(kb_id=kb_id)


@shared_task
def knowledge_bases_recalibrate_task() -> list[int]:
    """Celery beat: re-calibrate the bases where enough new reviewed feedback has accumulated."""
    from chat.services.calibration import knowledge_bases_recalibrate_due

    return knowledge_bases_recalibrate_due()


@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=None)
def webhook_deliver_task(self: Any, *, delivery_id: int) -> bool:
    """Deliver, retrying with exponential back-off (KB_WEBHOOK_RETRY_SECONDS x 2^n) up to KB_WEBHOOK_MAX_RETRIES."""
    try:
        return webhooks.webhook_deliver(delivery_id=delivery_id)
    except webhooks.WebhookFailed as exc:
        if self.request.retries >= settings.KB_WEBHOOK_MAX_RETRIES:
            webhooks.webhook_delivery_give_up(delivery_id=delivery_id)
            return False
        raise self.retry(exc=exc, countdown=settings.KB_WEBHOOK_RETRY_SECONDS * 2 ** self.request.retries) from exc


@shared_task(acks_late=True, reject_on_worker_lost=True)
def case_check_task(*, check_id: int) -> bool:
    """A queued case check (a large case set): scored here, the page follows its progress."""
    from chat.services.checks import case_check_run_queued

    return case_check_run_queued(check_id=check_id)
