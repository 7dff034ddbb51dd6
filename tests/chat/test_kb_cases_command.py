"""`manage.py kb_cases import | export | run`."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from knowledge.cases.services import regression_case_add, regression_case_clean
from knowledge.models import CaseCheck, CaseSource, FaqEntry, KnowledgeBase, RegressionCase
from tests.conftest import WorkerProcess
from tests.helpers import calibration_in_force

GOOD = [{"query": "退款要几天才能到账", "relevant_ids": ["refund"], "expect": "answer", "note": "from a complaint"},
        {"query": "How can I delete my account?", "relevant_ids": ["delete-account"]},
        {"query": "What is the capital of France?", "relevant_ids": [], "expect": "no_answer"}]


def _lines(rows: Sequence[object]) -> bytes:
    return "\n".join(json.dumps(row, ensure_ascii=False) if not isinstance(row, str) else row
                     for row in rows).encode()


def test_import_then_export_round_trips_and_merges_near_identical_questions(
    shop: KnowledgeBase, tmp_file: Callable[[str, bytes], Path]
) -> None:
    out = StringIO()
    call_command("kb_cases", "import", str(tmp_file("cases.jsonl", _lines(GOOD))), "--kb", "shop", stdout=out)
    assert "3 cases added, 0 merged" in out.getvalue()
    # Width, case, spacing and final punctuation differ: the same case.
    again = [{"query": "退款要几天才能到账？", "relevant_ids": ["refund"]},
             {"query": "how can i  delete my account", "relevant_ids": ["delete-account"]}]
    out = StringIO()
    call_command("kb_cases", "import", str(tmp_file("again.jsonl", _lines(again))), "--kb", "shop", stdout=out)
    assert "0 cases added, 2 merged" in out.getvalue()
    assert RegressionCase.objects.count() == 3
    assert RegressionCase.objects.get(question="退款要几天才能到账").occurrences == 2

    exported = StringIO()
    call_command("kb_cases", "export", "--kb", "shop", stdout=exported)
    rows = [json.loads(line) for line in exported.getvalue().splitlines()]
    assert rows == [{"query": "退款要几天才能到账", "expect": "answer", "relevant_ids": ["refund"],
                     "note": "from a complaint"},
                    {"query": "How can I delete my account?", "expect": "answer", "relevant_ids": ["delete-account"]},
                    {"query": "What is the capital of France?", "expect": "no_answer", "relevant_ids": []}]


def test_a_malformed_file_writes_nothing_and_reports_every_bad_line(
    shop: KnowledgeBase, tmp_file: Callable[[str, bytes], Path]
) -> None:
    other = KnowledgeBase.objects.create(slug="other", name="Other", embed_model=shop.embed_model,
                                         embed_dimensions=shop.embed_dimensions)
    FaqEntry.objects.create(kb=other, external_id="elsewhere", question="q")
    rows: list[object] = [
        GOOD[0],
        "{not json",
        {"query": "", "relevant_ids": ["refund"]},
        {"query": "退款", "relevant_ids": ["no-such-id"]},
        {"query": "退款", "relevant_ids": ["elsewhere"]},  # another knowledge base's entry
        {"query": "退款", "relevant_ids": ["refund"], "expect": "maybe"},
        {"query": "退款", "relevant_ids": ["refund"], "expect": "no_answer"},
        {"query": "退款", "relevant_ids": ["refund", "address"]},
        {"query": "退款", "relevant_ids": ["refund"], "colour": "red"},
        ["a list"],
    ]
    err = StringIO()
    with pytest.raises(CommandError, match=r"9 bad line\(s\); nothing was written"):
        call_command("kb_cases", "import", str(tmp_file("bad.jsonl", _lines(rows))), "--kb", "shop", stderr=err)
    report = err.getvalue().splitlines()
    assert [line.split(": ", 1)[1].split(":")[0] for line in report] == [f"line {n}" for n in range(2, 11)]
    text = err.getvalue()
    for expected in ("line 2: not JSON", "line 3: question: must not be empty",
                     "no entry with external id 'no-such-id'", "no entry with external id 'elsewhere'",
                     "line 6: expect: must be one of answer, suggest, no_answer",
                     "line 7: entry: a no_answer case names no entry", "line 8: a case expects one entry",
                     "line 9: unknown field 'colour'", "line 10: expected an object"):
        assert expected in text, text
    assert not RegressionCase.objects.exists()


def test_an_unknown_knowledge_base_and_an_empty_file_are_refused(
    shop: KnowledgeBase, tmp_file: Callable[[str, bytes], Path]
) -> None:
    with pytest.raises(CommandError, match="No knowledge base with slug 'nope'"):
        call_command("kb_cases", "run", "--kb", "nope")
    with pytest.raises(CommandError, match="has no cases; nothing was written"):
        call_command("kb_cases", "import", str(tmp_file("empty.jsonl", b"\n\n")), "--kb", "shop")
    with pytest.raises(CommandError, match="shop has no regression cases"):
        call_command("kb_cases", "run", "--kb", "shop")


@pytest.mark.worker
def test_run_prints_a_table_and_exits_1_when_a_case_fails(shop: KnowledgeBase, rerank_worker: WorkerProcess) -> None:
    calibration_in_force(shop, answer=0.3, suggest=0.05)
    refund = FaqEntry.objects.get(kb=shop, external_id="refund")
    regression_case_add(kb=shop, case=regression_case_clean(kb=shop, question="退款要几天才能到账", expect="answer",
                                                            entry_id=refund.pk), source=CaseSource.ADMIN)
    out = StringIO()
    call_command("kb_cases", "run", "--kb", "shop", "--json", stdout=out, stderr=StringIO())
    body = json.loads(out.getvalue())
    assert (body["cases"], body["passed_after"], body["failed"]) == (1, 1, 0)
    assert body["results"][0]["after"]["top_entry"] == refund.pk

    address = FaqEntry.objects.get(kb=shop, external_id="address")
    regression_case_add(kb=shop, case=regression_case_clean(kb=shop, question="退款要几天才能到账", expect="answer",
                                                            entry_id=address.pk), source=CaseSource.ADMIN)
    out = StringIO()
    with pytest.raises(SystemExit) as exited:
        call_command("kb_cases", "run", "--kb", "shop", stdout=out, stderr=StringIO())
    assert exited.value.code == 1
    table = out.getvalue()
    assert "2 cases, 1 pass" in table and "FAIL" in table and "pass" in table
    assert CaseCheck.objects.filter(kb=shop, trigger="kb_cases run").count() == 2
