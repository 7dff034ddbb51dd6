from celery import shared_task

from knowledge import services


@shared_task(acks_late=True, reject_on_worker_lost=True, max_retries=5, default_retry_delay=5)
def faq_entries_embed_task(*, entry_ids: list[int], model: str | None = None) -> int:
    # Idempotent: entries whose vector already matches their text are skipped.
    return services.faq_entries_embed(entry_ids=entry_ids, model=model)
