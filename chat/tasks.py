from celery import shared_task

from chat.services import ask


@shared_task(acks_late=True, reject_on_worker_lost=True)
def question_rerank_late_task(*, question_id: int) -> bool:
    return ask.question_rerank_late(question_id=question_id)


@shared_task(acks_late=True, reject_on_worker_lost=True)
def question_answer_task(*, question_id: int) -> bool:
    from chat.services.tickets import question_answer

    return question_answer(question_id=question_id)
