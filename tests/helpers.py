from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from knowledge.models import Calibration, KnowledgeBase


def wait_until(predicate: Callable[[], object], *, timeout: float = 30, interval: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


def calibration_in_force(kb: KnowledgeBase, *, answer: float | None, suggest: float, engine: str = "lite",
                         model: str = "", by_language: dict | None = None) -> Calibration:
    """Put a calibration with these thresholds in force, as kb_calibrate records it, for the lite engine the
    test rerank worker runs (or another engine/model, to test that it then does not apply)."""
    from knowledge.services import knowledge_base_calibration_record
    from rerank.engines.lite import LITE_MODEL

    return knowledge_base_calibration_record(
        kb_id=kb.pk, engine=engine, model=model or LITE_MODEL, target_precision=0.9, confidence=0.95,
        answer_threshold=answer, suggest_threshold=suggest, precision_bound=None if answer is None else 0.9,
        coverage=0.5, labels_needed=None, evidence={"queries": {"questions": 30, "answerable": 30, "no_answer": 0}},
        risk_coverage=[], summary={}, feedback_until=0, by_language=by_language or {})
