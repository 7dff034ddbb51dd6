"""Imports whose process dies half-way: `kb_import` SIGKILLed, and the web server SIGKILLed while it
confirms an admin import. The knowledge base then holds none of the import's rows; running the same
import again ends exactly where one uninterrupted import would (upsert by external_id: the same
values, no duplicates, one revision per written row, unchanged rows skipped) and its entries get
embedded. A re-run of an identical file writes nothing: no revision, no version bump.

The kill is timed by the database, not by sleeping: the import's transaction must be open
(pg_stat_activity, found by the application name its process connects with) and must have inserted
a quarter of its rows (the id sequence moves outside transactions, so the uncommitted rows show)."""

from __future__ import annotations

import base64
import csv
import io
import json
import math
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from django.conf import settings
from django.contrib.auth.models import User
from django.db import connection
from django.db.models import Count
from pytest_django.fixtures import Settings
from reversion.models import Version

from kbservice.embedded import BASE_DIR, free_port, wait_for_http_ok
from knowledge.importing import faq_entries_import
from knowledge.models import FaqEntry, KnowledgeBase
from knowledge.resources import FORMATS
from knowledge.selectors import knowledge_base_embedding_status
from knowledge.services import faq_entry_create, knowledge_base_create
from tests.conftest import WorkerProcess, _test_database_url
from tests.helpers import wait_until
from tests.reliability.admin_session import hidden_inputs, sign_in

# Big enough that the write phase lasts seconds even on a fast machine, so the kill lands inside it.
ROWS = 2000
KILL_AFTER_ROWS = ROWS // 4
COLUMNS = ["external_id", "question", "answer", "summary", "tags", "category", "language"]
IMPORT_URL = "/admin/knowledge/faqentry/import/"
CONFIRM_URL = "/admin/knowledge/faqentry/process_import/"
PASSWORD = "import-manager-password"


def faq_row(number: int) -> dict[str, str]:
    """One entry of a generated knowledge base: Chinese and English alternate, every question is unique."""
    if number % 2 == 0:
        return {"external_id": f"bulk-{number:05d}", "question": f"订单{number}的发票怎么开？",
                "answer": f"在订单{number}详情页点击“申请发票”，电子发票会在{number % 7 + 1}个工作日内发到您的邮箱。",
                "summary": f"订单{number}电子发票申请", "tags": "发票,订单", "category": "账单", "language": "zh"}
    return {"external_id": f"bulk-{number:05d}", "question": f"How do I track parcel {number}?",
            "answer": f"Open order {number} and choose Track parcel. Updates arrive within {number % 5 + 1} hours.",
            "summary": f"parcel {number} tracking status", "tags": "shipping,tracking", "category": "Shipping",
            "language": "en"}


def faq_csv(rows: int) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows(faq_row(number) for number in range(rows))
    return out.getvalue().encode()


def entry_data(number: int) -> dict[str, Any]:
    return {**faq_row(number), "tags": faq_row(number)["tags"].split(",")}


# --- the state of a knowledge base ------------------------------------------------------------------

State = dict[str, tuple[Any, ...]]  # external_id → (fields…, version, revisions)
UNCHANGED_BY_IMPORT = {"external_id": "manual-1", "question": "Can I collect my order in a store?",
                       "answer": "Yes, choose Click & Collect at checkout.", "tags": ["pickup"], "language": "en"}


def kb_state(kb: KnowledgeBase) -> State:
    entries = list(FaqEntry.objects.filter(kb=kb))
    revisions = dict(Version.objects.get_for_model(FaqEntry).filter(object_id__in=[str(e.pk) for e in entries])
                     .order_by().values_list("object_id").annotate(n=Count("id")))
    state = {entry.external_id or "": (entry.question, entry.answer, entry.summary, list(entry.tags), entry.category,
                                       entry.language, entry.status, entry.version, revisions.get(str(entry.pk), 0))
             for entry in entries}
    assert len(state) == len(entries), "two entries share an external_id"
    return state


def expected_after_import(before: State) -> State:
    """What one uninterrupted import of faq_csv(ROWS) makes of the seeded knowledge base."""
    state = dict(before)
    for number in range(ROWS):
        data = entry_data(number)
        if data["external_id"] in before and before[data["external_id"]][:7] == _fields(data):
            continue  # unchanged: skipped, no revision
        version, revisions = (2, 2) if data["external_id"] in before else (1, 1)
        state[data["external_id"]] = (*_fields(data), version, revisions)
    return state


def _fields(data: dict[str, Any]) -> tuple[Any, ...]:
    return (data["question"], data["answer"], data["summary"], data["tags"], data["category"], data["language"],
            "published")


@pytest.fixture
def bulk(transactional_db: None) -> KnowledgeBase:
    """A knowledge base the import updates one entry of (row 0), finds one unchanged (row 1), and
    leaves one alone (not in the file)."""
    kb = knowledge_base_create(slug="bulk")
    faq_entry_create(kb=kb, data={**entry_data(0), "answer": "An outdated answer."})
    faq_entry_create(kb=kb, data=entry_data(1))
    faq_entry_create(kb=kb, data=UNCHANGED_BY_IMPORT)
    return kb


# --- watching and killing an import -----------------------------------------------------------------


def entry_ids_taken() -> int:
    """The entry id sequence: it advances for uncommitted inserts too, so it shows an import's progress."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT coalesce(pg_sequence_last_value(pg_get_serial_sequence('knowledge_faqentry', 'id')"
                       "::regclass), 0)")
        return int(cursor.fetchone()[0])


def open_transaction_of(application_name: str) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s AND xact_start IS NOT NULL",
                       [application_name])
        return bool(cursor.fetchone()[0])


def connected(application_name: str) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", [application_name])
        return bool(cursor.fetchone()[0])


def kill_mid_import(process: subprocess.Popen[bytes], *, application_name: str, first_id: int) -> int:
    """SIGKILL ``process`` (and its children) once its import transaction is open and has inserted
    KILL_AFTER_ROWS entries; returns how many entries it had inserted when it died."""
    deadline = time.monotonic() + 600
    while not (entry_ids_taken() - first_id >= KILL_AFTER_ROWS and open_transaction_of(application_name)):
        assert process.poll() is None, f"the import process ended (exit {process.returncode}) before the kill"
        assert time.monotonic() < deadline, "the import never reached the rows to kill it at"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    # Postgres rolls the transaction back when it notices its client is gone.
    wait_until(lambda: not connected(application_name), timeout=60)
    return entry_ids_taken() - first_id


def manage_env(application_name: str) -> dict[str, str]:
    # PGAPPNAME names the process's database connection in pg_stat_activity.
    return {**os.environ, "DATABASE_URL": _test_database_url(), "REDIS_URL": settings.REDIS_URL,
            "PGAPPNAME": application_name}


def start_kb_import(path: Path, *, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """`kb_import` in its own process group, so that it can be killed whole."""
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "manage.py", "kb_import", str(path), "--kb", "bulk"], cwd=BASE_DIR,
                                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def kb_import_report(path: Path, *, env: dict[str, str]) -> dict[str, Any]:
    """Runs `kb_import --json` to the end; returns its report."""
    result = subprocess.run([sys.executable, "manage.py", "kb_import", str(path), "--kb", "bulk", "--json"],
                            cwd=BASE_DIR, env=env, capture_output=True, timeout=600)
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    report: dict[str, Any] = json.loads(result.stdout)
    return report


@contextmanager
def web_server(env: dict[str, str], log: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """gunicorn as production runs it, in its own process group so that it can be killed whole."""
    port = free_port()
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "kbservice.wsgi", "--bind", f"127.0.0.1:{port}", "--workers", "1",
             "--threads", "4", "--timeout", "300"],
            cwd=BASE_DIR, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http_ok(f"{base_url}/healthz", timeout=120,
                         check=lambda: f"gunicorn exited: see {log}" if process.poll() is not None else None)
        yield base_url, process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=60)


def admin_preview(client: httpx.Client, kb: KnowledgeBase, content: bytes) -> dict[str, str]:
    """Uploads the file on the admin's import page; returns the confirm form of the preview."""
    token = hidden_inputs(client.get(IMPORT_URL).text)["csrfmiddlewaretoken"]
    csv_format = str(next(index for index, fmt in enumerate(FORMATS) if fmt.name == "csv"))
    preview = client.post(IMPORT_URL, data={"csrfmiddlewaretoken": token, "resource": "0", "kb": str(kb.pk),
                                            "format": csv_format, "language": ""},
                          files={"import_file": ("faq.csv", content, "text/csv")})
    assert preview.status_code == 200 and "Confirm import" in preview.text, preview.text[:1000]
    confirm_form = preview.text[preview.text.index(f'action="{CONFIRM_URL}"'):]
    return hidden_inputs(confirm_form[:confirm_form.index("</form>")])


# --- the tests --------------------------------------------------------------------------------------


@pytest.mark.worker
@pytest.mark.timeout(900)  # embedding 2,000 entries on one solo CPU worker dominates
def test_kb_import_killed_mid_write_leaves_nothing_and_a_rerun_converges(
    bulk: KnowledgeBase, cpu_worker: WorkerProcess, tmp_path: Path,
) -> None:
    path = tmp_path / "faq.csv"
    path.write_bytes(faq_csv(ROWS))
    before = kb_state(bulk)
    expected = expected_after_import(before)
    generation = KnowledgeBase.objects.get(pk=bulk.pk).content_generation
    env = manage_env(f"kb-import-{uuid.uuid4().hex[:8]}")

    first_id = entry_ids_taken()
    inserted = kill_mid_import(start_kb_import(path, env=env, log=tmp_path / "killed.log"),
                               application_name=env["PGAPPNAME"], first_id=first_id)

    assert KILL_AFTER_ROWS <= inserted < ROWS - 2, "the kill did not land in the middle of the write"
    assert kb_state(bulk) == before
    assert KnowledgeBase.objects.get(pk=bulk.pk).content_generation == generation

    report = kb_import_report(path, env=env)
    assert (report["written"], report["counts"]) == (True, {"create": ROWS - 2, "update": 1, "skip": 1, "error": 0})
    assert kb_state(bulk) == expected

    assert kb_import_report(path, env=env)["counts"] == {"create": 0, "update": 0, "skip": ROWS, "error": 0}
    assert kb_state(bulk) == expected  # no revision, no version bump for unchanged rows

    wait_until(lambda: knowledge_base_embedding_status(kb=bulk).complete, timeout=600, interval=1)
    status = knowledge_base_embedding_status(kb=bulk)
    assert (status.entries, status.embedded) == (ROWS + 1, ROWS + 1)


def test_admin_import_whose_web_server_dies_leaves_nothing_and_a_rerun_converges(
    bulk: KnowledgeBase, staff_user: Callable[..., User], tmp_path: Path,
) -> None:
    manager = staff_user("knowledge manager", "imports-manager")
    manager.set_password(PASSWORD)
    manager.save()
    content = faq_csv(ROWS)
    before = kb_state(bulk)
    env = manage_env(f"kb-web-{uuid.uuid4().hex[:8]}")

    with web_server(env, tmp_path / "web-killed.log") as (base_url, process), \
            closing(sign_in(base_url, username=manager.username, password=PASSWORD, timeout=600)) as client, \
            ThreadPoolExecutor(max_workers=1) as pool:
        confirm = admin_preview(client, bulk, content)
        first_id = entry_ids_taken()
        confirming = pool.submit(client.post, CONFIRM_URL, data=confirm)
        inserted = kill_mid_import(process, application_name=env["PGAPPNAME"], first_id=first_id)
        assert isinstance(confirming.exception(timeout=60), httpx.TransportError)

    assert KILL_AFTER_ROWS <= inserted < ROWS - 2, "the kill did not land in the middle of the write"
    assert kb_state(bulk) == before

    with web_server(env, tmp_path / "web.log") as (base_url, _), \
            closing(sign_in(base_url, username=manager.username, password=PASSWORD, timeout=600)) as client:
        done = client.post(CONFIRM_URL, data=admin_preview(client, bulk, content))
    assert (done.status_code, done.headers.get("location")) == (302, "/admin/knowledge/faqentry/"), done.text[:1000]

    assert kb_state(bulk) == expected_after_import(before)
    imported = Version.objects.get_for_model(FaqEntry).filter(revision__comment="Imported from faq.csv")
    assert imported.count() == ROWS - 1  # every row but the unchanged one
    assert set(imported.values_list("revision__user__username", flat=True)) == {manager.username}


@pytest.mark.worker
def test_embeddings_lost_after_an_import_committed_are_queued_by_running_it_again(
    transactional_db: None, cpu_worker: WorkerProcess, settings: Settings, redis_client: redis.Redis,
) -> None:
    """GIVEN an import that committed but whose embedding tasks never reached a worker (its process
    died right after the commit, or the broker lost them): here they go to a queue nobody consumes
    WHEN the same file is imported again (every row unchanged, so nothing is written)
    THEN the entries still get embedded. Also: tasks carry KB_EMBED_BATCH entries, not one each."""
    rows = 100
    kb = knowledge_base_create(slug="lost-embeddings")
    settings.KB_EMBED_QUEUE = lost_queue = f"nobody-consumes-{uuid.uuid4().hex}"

    report = faq_entries_import(kb=kb, content=faq_csv(rows), filename="faq.csv")

    assert report.counts["create"] == rows
    messages = [json.loads(raw) for raw in redis_client.lrange(lost_queue, 0, -1)]
    redis_client.delete(lost_queue)
    assert {message["headers"]["task"] for message in messages} == {"knowledge.tasks.faq_entries_embed_task"}
    batches = [json.loads(base64.b64decode(message["body"]))[1]["entry_ids"] for message in messages]
    assert len(batches) == math.ceil(rows / settings.KB_EMBED_BATCH)
    assert sorted(pk for batch in batches for pk in batch) == sorted(FaqEntry.objects.filter(kb=kb)
                                                                     .values_list("pk", flat=True))
    revisions = Version.objects.count()
    assert knowledge_base_embedding_status(kb=kb).embedded == 0

    settings.KB_EMBED_QUEUE = "default"
    again = faq_entries_import(kb=kb, content=faq_csv(rows), filename="faq.csv")

    assert again.counts == {"create": 0, "update": 0, "skip": rows, "error": 0}
    assert Version.objects.count() == revisions
    wait_until(lambda: knowledge_base_embedding_status(kb=kb).complete, timeout=300, interval=0.5)
