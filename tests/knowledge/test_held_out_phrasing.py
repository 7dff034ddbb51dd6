"""A similar question asked with itself held out: recall scores its entry as if it did not have it."""

from __future__ import annotations

import pytest

from chat.services.calibration import SIMILAR, evidence_from_similar_questions
from knowledge.models import KnowledgeBase
from knowledge.selectors import HeldOutPhrasing, faq_fulltext_search, faq_vector_search
from knowledge.services import faq_entries_embed, faq_entry_create, knowledge_base_create

OTHERS = [
    {"question": "Why was my card charged twice?", "answer": "A pending charge drops off within three days."},
    {"question": "How long does a refund take?", "answer": "Refunds reach your card in five working days."},
    {"question": "Can I change my delivery address?", "answer": "Until the order ships, from the order page."},
]
KEPT = "I can't remember my password"
HELD = "my login code never arrives by text message"


def _base(slug: str, similar: list[str]) -> tuple[KnowledgeBase, int]:
    kb = knowledge_base_create(slug=slug, name=slug)
    entry = faq_entry_create(kb=kb, data={"question": "How do I reset my password?", "similar_questions": similar,
                                          "answer": "Use the reset link on the sign-in page.", "language": "en"})
    ids = [entry.pk, *(faq_entry_create(kb=kb, data={**row, "language": "en"}).pk for row in OTHERS)]
    faq_entries_embed(entry_ids=ids)
    return kb, entry.pk


@pytest.fixture
def bases(db: None) -> tuple[tuple[KnowledgeBase, int], tuple[KnowledgeBase, int]]:
    return _base("with-both", [KEPT, HELD]), _base("without-held", [KEPT])


def test_vector_score_is_the_best_of_the_other_phrasings(bases: tuple) -> None:
    (full, entry), (without, other_entry) = bases
    held_out = HeldOutPhrasing(entry_id=entry, number=2, text=HELD)

    asked = {hit.entry_id: hit.score for hit in faq_vector_search(kb=full, query=HELD, k=10)}
    left_out = {hit.entry_id: hit.score for hit in faq_vector_search(kb=full, query=HELD, k=10, held_out=held_out)}
    reference = {hit.entry_id: hit.score for hit in faq_vector_search(kb=without, query=HELD, k=10)}

    assert asked[entry] > left_out[entry]
    assert left_out[entry] == pytest.approx(reference[other_entry], abs=1e-6)


def test_full_text_loses_the_phrasings_terms_and_only_for_its_entry(bases: tuple) -> None:
    (full, entry), (without, other_entry) = bases
    held_out = HeldOutPhrasing(entry_id=entry, number=2, text=HELD)
    query = "login code by text message"

    asked = {hit.entry_id: hit.score for hit in faq_fulltext_search(kb=full, query=query, k=10)}
    left_out = {hit.entry_id: hit.score for hit in faq_fulltext_search(kb=full, query=query, k=10, held_out=held_out)}
    reference = {hit.entry_id for hit in faq_fulltext_search(kb=without, query=query, k=10)}

    assert entry in asked
    # Its words are in no other field of the entry: without the phrasing the entry does not match, as in
    # the base that never had it; the other entries' scores do not move.
    assert entry not in left_out and other_entry not in reference
    assert left_out == {pk: score for pk, score in asked.items() if pk != entry}


def test_full_text_keeps_what_the_entry_has_elsewhere(bases: tuple) -> None:
    (full, entry), _ = bases
    held_out = HeldOutPhrasing(entry_id=entry, number=1, text=KEPT)
    query = "remember my password"

    left_out = {hit.entry_id: hit.score for hit in faq_fulltext_search(kb=full, query=query, k=10, held_out=held_out)}
    asked = {hit.entry_id: hit.score for hit in faq_fulltext_search(kb=full, query=query, k=10)}

    assert 0 < left_out[entry] < asked[entry]  # "password" is in its question too


def test_calibration_asks_each_similar_question_held_out(bases: tuple) -> None:
    (full, entry), _ = bases

    positives = [item.query for item in evidence_from_similar_questions(kb=full) if item.source == SIMILAR]

    assert [(q.query, q.held_out) for q in positives] == [
        (KEPT, HeldOutPhrasing(entry_id=entry, number=1, text=KEPT)),
        (HELD, HeldOutPhrasing(entry_id=entry, number=2, text=HELD))]
