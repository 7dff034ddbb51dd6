from celery import shared_task

from chat.services import ask


@shared_task(acks_late=True, reject_on_worker_lost=True)
def question_rerank_late_task(*, question_id: int) -> bool:
    return ask.question_rerank_late(question_id=question_id)


@shared_task(acks_late=True, reject_on_worker_lost=True)
def question_answer_task(*, question_id: int) -> bool:
    from chat.services.tickets import question_answer

    return question_answer(question_id=question_id)


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
