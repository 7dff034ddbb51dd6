"""Two imports of one file into one knowledge base, at once, on two connections: the knowledge base's
row lock serialises them, so the second plans against what the first wrote and creates nothing twice."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from django.db import connection, connections

import knowledge.importing as importing
from knowledge.importing import ImportReport, RowAction, faq_entries_import
from knowledge.models import FaqEntry, KnowledgeBase
from knowledge.services import knowledge_base_create
from tests.helpers import wait_until

CSV = "question,answer\nHow do I pay?,By card.\nWhere is my parcel?,Use the tracking link.\n"


def _someone_waits_on_a_lock() -> bool:
    with connections["default"].cursor() as cursor:
        # pg_locks, not pg_stat_activity: that one is a snapshot taken once per transaction.
        cursor.execute("SELECT count(*) FROM pg_locks WHERE NOT granted")
        return cursor.fetchone()[0] > 0


def test_a_concurrent_import_waits_for_the_first_and_creates_nothing_twice(
    transactional_db: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GIVEN import A has planned its rows and holds its transaction open
    WHEN import B of the same file starts on another connection
    THEN A writes only once B is seen blocked on a lock (or, were there no lock, once B has planned too:
    then both plan "create" and the test fails); B then plans against A's rows and writes no entry."""
    kb = knowledge_base_create(slug="shop", name="Shop")
    b_planned = threading.Event()
    original_plan, original_apply = importing.plan_rows, importing.apply_rows

    def plan_rows(**kwargs: Any) -> Any:
        planned = original_plan(**kwargs)
        if threading.current_thread().name == "import-b":
            b_planned.set()
        return planned

    def apply_rows(**kwargs: Any) -> Any:
        if threading.current_thread().name == "import-a":
            b.start()
            # Evidence, not a pause: B is blocked on A's lock, or B got past planning unblocked.
            wait_until(lambda: b_planned.is_set() or _someone_waits_on_a_lock(), timeout=120)
        return original_apply(**kwargs)

    monkeypatch.setattr(importing, "plan_rows", plan_rows)
    monkeypatch.setattr(importing, "apply_rows", apply_rows)
    reports: dict[str, ImportReport | BaseException] = {}

    def run(name: str) -> None:
        try:
            reports[name] = faq_entries_import(kb=KnowledgeBase.objects.get(pk=kb.pk), content=CSV.encode(),
                                               filename="faq.csv")
        except BaseException as error:  # reported below, with the other import's result
            reports[name] = error
        finally:
            connection.close()

    a = threading.Thread(target=run, args=("a",), name="import-a")
    b = threading.Thread(target=run, args=("b",), name="import-b")
    a.start()
    a.join(timeout=300)
    b.join(timeout=300)
    assert not a.is_alive() and not b.is_alive()

    first, second = reports["a"], reports["b"]
    assert isinstance(first, ImportReport) and isinstance(second, ImportReport), reports
    assert first.written and [row.action for row in first.rows] == [RowAction.CREATE, RowAction.CREATE]
    assert RowAction.CREATE not in [row.action for row in second.rows], second.rows
    assert sorted(FaqEntry.objects.values_list("question", flat=True)) == ["How do I pay?", "Where is my parcel?"]
