import pytest
from django.core.exceptions import ValidationError
from reversion.models import Version

from knowledge.models import FaqEntry, KnowledgeBase
from knowledge.services import (
    FaqEntryConflict,
    faq_entries_set_status,
    faq_entry_create,
    faq_entry_rollback,
    faq_entry_update,
)


def _versions(entry: FaqEntry) -> list[Version]:
    return list(Version.objects.get_for_object(entry).order_by("pk"))


def test_every_save_is_a_revision_and_rollback_is_a_new_one(kb: KnowledgeBase) -> None:
    entry = faq_entry_create(kb=kb, data={"question": "如何退款？", "answer": "在订单页申请退款。"})
    entry = faq_entry_update(entry_id=entry.pk, expected_version=1, data={"answer": "联系客服退款。"})
    assert [v.field_dict["answer"] for v in _versions(entry)] == ["在订单页申请退款。", "联系客服退款。"]

    first = _versions(entry)[0]
    entry = faq_entry_rollback(entry_id=entry.pk, version_id=first.pk)

    versions = _versions(entry)
    assert len(versions) == 3
    assert entry.answer == "在订单页申请退款。"
    assert entry.version == 3
    assert versions[-1].revision.comment == f"Rolled back to revision {first.revision_id}"


def test_stale_version_is_a_conflict_and_changes_nothing(kb: KnowledgeBase) -> None:
    entry = faq_entry_create(kb=kb, data={"question": "How do I reset my password?", "answer": "Use the link."})
    faq_entry_update(entry_id=entry.pk, expected_version=1, data={"answer": "First editor's answer."})

    with pytest.raises(FaqEntryConflict) as conflict:
        faq_entry_update(entry_id=entry.pk, expected_version=1, data={"answer": "Second editor's answer."})

    assert conflict.value.current_version == 2
    entry.refresh_from_db()
    assert entry.answer == "First editor's answer."
    assert len(_versions(entry)) == 2


def test_edit_bumps_the_knowledge_base_generation(kb: KnowledgeBase) -> None:
    entry = faq_entry_create(kb=kb, data={"question": "Where is my parcel?"})
    before = KnowledgeBase.objects.get(pk=kb.pk).content_generation
    faq_entry_update(entry_id=entry.pk, expected_version=entry.version, data={"answer": "Track it online."})
    assert KnowledgeBase.objects.get(pk=kb.pk).content_generation == before + 1


def test_bulk_archive_writes_one_revision_per_entry(kb: KnowledgeBase) -> None:
    entries = [faq_entry_create(kb=kb, data={"question": f"Question {n}"}) for n in range(3)]
    assert faq_entries_set_status(entry_ids=[e.pk for e in entries], status="archived") == 3
    assert set(FaqEntry.objects.values_list("status", flat=True)) == {"archived"}
    assert all(len(_versions(e)) == 2 for e in entries)


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"question": ""}, "question"),
        ({"question": "   \n "}, "question"),
        ({"question": "ok", "answer": "x" * 1_000_000}, "answer"),
        ({"question": "bad\x00byte"}, "question"),
        ({"question": "mojibake \ufffd here"}, "question"),
        ({"question": "ok", "status": "deleted"}, "status"),
        ({"question": "ok", "language": "klingon"}, "language"),
        ({"question": "ok", "tags": 42}, "tags"),
    ],
)
def test_bad_entries_are_rejected_by_field_and_nothing_is_written(
    kb: KnowledgeBase, data: dict[str, object], field: str
) -> None:
    with pytest.raises(ValidationError) as error:
        faq_entry_create(kb=kb, data=data)
    assert field in error.value.message_dict
    assert FaqEntry.objects.count() == 0
    assert Version.objects.count() == 0
