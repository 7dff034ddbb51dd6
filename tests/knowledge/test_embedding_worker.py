"""Through the real broker and a real Celery worker: saving an entry embeds it, editing re-embeds it."""

import pytest

from knowledge.models import FaqEmbedding, FaqEntry
from knowledge.selectors import knowledge_base_embedding_status
from knowledge.services import faq_entry_create, faq_entry_update, knowledge_base_create
from tests.conftest import WorkerProcess
from tests.helpers import wait_until


@pytest.mark.worker
def test_worker_embeds_after_commit_and_refreshes_after_an_edit(
    transactional_db: None, cpu_worker: WorkerProcess
) -> None:
    kb = knowledge_base_create(slug="worker-kb")
    entry = faq_entry_create(kb=kb, data={"question": "How do I change my email?", "answer": "In Settings."})

    wait_until(lambda: knowledge_base_embedding_status(kb=kb).complete, timeout=60)
    first = FaqEmbedding.objects.get(entry=entry)

    entry = faq_entry_update(entry_id=entry.pk, expected_version=1,
                             data={"answer": "Open Profile, then Email, and confirm the new address."})
    assert not knowledge_base_embedding_status(kb=kb).complete

    wait_until(lambda: knowledge_base_embedding_status(kb=kb).complete, timeout=60)
    second = FaqEmbedding.objects.get(entry=entry)
    assert second.content_hash == FaqEntry.objects.get(pk=entry.pk).content_hash != first.content_hash
    assert list(second.vector) != list(first.vector)
