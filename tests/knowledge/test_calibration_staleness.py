"""A calibration goes stale when much of the content changed since, and keeps applying until refreshed."""

from __future__ import annotations

from chat.services.ask import decision_thresholds
from knowledge.models import FaqStatus, KnowledgeBase
from knowledge.selectors import knowledge_base_calibration_state
from knowledge.services import faq_entries_set_status, faq_entry_create, faq_entry_update
from rerank.engines.lite import LITE_MODEL
from tests.helpers import calibration_in_force

RUNNING = ("lite", LITE_MODEL)


def test_stale_past_a_tenth_of_the_entries_changed_and_still_in_force(kb: KnowledgeBase) -> None:
    entries = [faq_entry_create(kb=kb, data={"question": f"Question number {n}?", "answer": "An answer."})
               for n in range(20)]
    calibration_in_force(kb, answer=0.8, suggest=0.3)
    kb.refresh_from_db()
    fresh = knowledge_base_calibration_state(kb=kb, running=RUNNING)
    assert (fresh.status, fresh.stale, fresh.changed_share) == ("calibrated", False, 0.0)

    faq_entry_update(entry_id=entries[0].pk, expected_version=1, data={"answer": "A better answer."})
    faq_entry_create(kb=kb, data={"question": "A new question?"})
    at_a_tenth = knowledge_base_calibration_state(kb=kb, running=RUNNING)
    assert (at_a_tenth.changed_share, at_a_tenth.stale) == (0.1, False)

    faq_entries_set_status(entry_ids=[entries[1].pk], status=FaqStatus.ARCHIVED)
    stale = knowledge_base_calibration_state(kb=kb, running=RUNNING)
    assert stale.stale and stale.status == "calibrated" and stale.changed_share == 0.15

    thresholds = decision_thresholds(kb=kb, engine=RUNNING[0], model=RUNNING[1], language="en")
    assert (thresholds.answer, thresholds.suggest, thresholds.calibrated) == (0.8, 0.3, True)
