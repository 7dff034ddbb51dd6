"""`make up` heals itself: a killed rerank worker, CPU worker or embedded Redis is restarted while the
stack keeps serving, /readyz tells the truth meanwhile, and nothing a customer sent is lost. A part
that crashes on start ends `make up` after its retry budget, with the reason.

Every test runs the product's own start code (``scripts/up.py``) in a folder of its own. The only
times asserted are the issue's own deadlines: /readyz 503 within 10 s of a rerank worker's death
(three 2 s heartbeats lapse in 6 s) and 200 again within 60 s."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.helpers import wait_until
from tests.reliability.load import AskLoad
from tests.reliability.test_import_interrupted import faq_csv
from tests.reliability.test_rerank_worker_killed import unfinished_tasks
from tests.reliability.up_stack import UpStack, readyz, wait_for_readyz

pytestmark = [pytest.mark.timeout(1500)]

DOWN_DEADLINE = 10.0  # the issue's: /readyz reports a dead rerank worker within 10 s...
BACK_DEADLINE = 60.0  # ...and is 200 again within 60 s
IN_FLIGHT = 40


class HealthzProbe(threading.Thread):
    """Asks /healthz every 0.2 s for as long as the test runs; collects every answer that was not 200."""

    def __init__(self, base_url: str) -> None:
        super().__init__(daemon=True, name="healthz-probe")
        self._client = httpx.Client(base_url=base_url, timeout=5)
        self._stopping = threading.Event()
        self.probes = 0
        self.slowest = 0.0
        self.failures: list[str] = []

    def run(self) -> None:
        while not self._stopping.wait(0.2):
            started = time.monotonic()
            try:
                status = self._client.get("/healthz").status_code
            except httpx.HTTPError as exc:
                self.failures.append(repr(exc))
                continue
            self.probes += 1
            self.slowest = max(self.slowest, time.monotonic() - started)
            if status != 200:
                self.failures.append(str(status))

    def stop(self) -> None:
        self._stopping.set()
        self.join()
        self._client.close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpStack]:
    # A dead worker's unacknowledged tasks come back after the visibility timeout: 30 s rather than
    # the default 120 s, which the embedding batches here never come near.
    up = UpStack(tmp_path_factory.mktemp("make-up") / "var", KB_BROKER_VISIBILITY_TIMEOUT="30")
    try:
        up.wait_ready()
        yield up
    finally:
        code = up.stop()
        print(f"\nmake up output:\n{up.output()}")
    # Ctrl-C is a clean stop, whatever was killed and restarted before.
    assert code == 0
    assert up.lines(r"stopping postgres")


@pytest.fixture(scope="module")
def key(stack: UpStack) -> str:
    return stack.manage("kb_key", "create", "--kb", "demo", "--kind", "secret", "--scopes", "ask").strip()


@pytest.fixture
def api(stack: UpStack, key: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as client:
        yield client


@pytest.fixture
def healthz(stack: UpStack) -> Iterator[HealthzProbe]:
    probe = HealthzProbe(stack.base_url)
    probe.start()
    yield probe
    probe.stop()
    print(f"\n/healthz: {probe.probes} probes, slowest {probe.slowest:.2f}s")


def uncached_questions(count: int) -> list[str]:
    run = uuid.uuid4().hex[:6]  # never asked before: each one is recalled and reranked
    wordings = ["订单{n}付款时提示交易异常怎么办", "How do I reset the password of account {n}?",
                "订单{n}的退款几天到账", "Can I change the delivery address of order {n}?"]
    return [wordings[n % len(wordings)].format(n=f"{run}-{n}") for n in range(count)]


def ticket_questions(api: httpx.Client, ticket: str) -> list[dict[str, Any]]:
    response = api.get(f"/api/v1/tickets/{ticket}")
    assert response.status_code == 200, response.text
    return list(response.json()["questions"])


def test_a_killed_rerank_worker_is_restarted_and_its_asks_are_answered_then_reranked_late(
    stack: UpStack, api: httpx.Client, key: str, healthz: HealthzProbe,
) -> None:
    """GIVEN the `make up` stack serving, and 40 new questions asked at once
    WHEN the rerank worker is SIGKILLed while it holds their reranks
    THEN all 40 are answered 200 (degraded where the rerank was lost); /readyz is 503 naming the
    rerank worker within 10 s and 200 again within 60 s, after make up restarted it; every degraded
    answer is then reranked late; /healthz never failed."""
    rerank_log = stack.var_dir / "log" / "rerank.log"
    with AskLoad(base_url=stack.base_url, key=key, kb="demo", questions=uncached_questions(IN_FLIGHT),
                 clients=IN_FLIGHT) as load:
        wait_until(lambda: unfinished_tasks(rerank_log), timeout=120, interval=0.02)
        stack.kill("-Q rerank")
        killed_at = time.monotonic()
        answered_before_kill = load.completed
        with httpx.Client(base_url=stack.base_url) as probe:
            to_503 = wait_for_readyz(probe, 503, since=killed_at, deadline=DOWN_DEADLINE)
            _, body = readyz(probe)
            to_200 = wait_for_readyz(probe, 200, since=killed_at, deadline=BACK_DEADLINE)
        results = load.join(timeout=240)

    statuses = Counter(result.rerank_status for result in results)
    print(f"\nkilled with {IN_FLIGHT - answered_before_kill} of {IN_FLIGHT} asks unanswered; /readyz 503 after "
          f"{to_503:.1f}s, 200 after {to_200:.1f}s; answers {dict(statuses)}")
    assert answered_before_kill < IN_FLIGHT
    assert [result.status for result in results] == [200] * IN_FLIGHT
    assert {result.body["cache"] for result in results} == {"miss"}
    assert set(statuses) <= {"ok", "degraded"} and statuses["degraded"] > 0
    assert to_503 <= DOWN_DEADLINE and to_200 <= BACK_DEADLINE
    assert body["failing"] == ["rerank_worker"], body
    assert stack.lines(r"down: rerank exited with -9 \(SIGKILL\)") and stack.lines(r"restarted rerank")
    assert stack.lines(r"not ready: rerank_worker")
    wait_until(lambda: stack.lines(r"ready again"), timeout=10)  # make up probes /readyz every second

    # Each degraded answer is updated on its ticket once the restarted worker has scored it.
    degraded = [result.body for result in results if result.rerank_status == "degraded"]

    def reranked_late() -> bool:
        stored = [ticket_questions(api, body["ticket"])[0] for body in degraded]
        return all(question["rerank"]["status"] == "ok" and question["rerank"].get("late") for question in stored)

    wait_until(reranked_late, timeout=240, interval=1)
    assert healthz.probes > 0 and healthz.failures == []


def test_tickets_created_while_the_cpu_worker_is_down_are_answered_after_its_restart(
    stack: UpStack, api: httpx.Client, healthz: HealthzProbe,
) -> None:
    """GIVEN the stack serving
    WHEN the CPU worker (and its pool) is SIGKILLed and tickets are created before it is back
    THEN make up restarts it, and it answers every one of those tickets."""
    worker_log = stack.var_dir / "log" / "worker.log"
    starts_before = worker_log.read_bytes().count(b" ready.")
    stack.kill("-Q default")
    created = []
    for question in uncached_questions(5):
        response = api.post("/api/v1/tickets", json={"kb": "demo", "question": question})
        assert response.status_code == 202, response.text
        assert response.json()["state"] == "pending"
        created.append(response.json()["ticket"])
    # All five were created while no CPU worker was consuming: its successor had not started yet.
    assert worker_log.read_bytes().count(b" ready.") == starts_before

    def answered() -> bool:
        return all(ticket_questions(api, ticket)[0]["state"] == "answered" for ticket in created)

    # How long make up's restart and the first answers take on two shared cores is not what is tested:
    # wait for the evidence, a restarted worker, then its answers, each with a wide margin.
    wait_until(lambda: worker_log.read_bytes().count(b" ready.") > starts_before, timeout=600, interval=1)
    wait_until(answered, timeout=600, interval=1)
    assert stack.lines(r"down: worker exited with -9 \(SIGKILL\)") and stack.lines(r"restarted worker")
    assert healthz.failures == []


def test_asks_keep_answering_uncached_while_redis_is_down_and_are_cached_again_after(
    stack: UpStack, api: httpx.Client, key: str, healthz: HealthzProbe,
) -> None:
    """GIVEN a question whose answer is cached, asked again and again by 4 clients
    WHEN embedded Redis is SIGKILLed and make up restarts it on its data
    THEN every ask is answered 200, uncached while Redis is down; afterwards /readyz is 200 again
    within 60 s and the question is answered from the cache again."""
    question = "退款几天能到账"
    api.post("/api/v1/ask", json={"kb": "demo", "question": question})
    assert api.post("/api/v1/ask", json={"kb": "demo", "question": question}).json()["cache"] == "hit"

    with AskLoad(base_url=stack.base_url, key=key, kb="demo", questions=iter(lambda: question, None),
                 clients=4) as load:
        wait_until(lambda: load.completed >= 20, timeout=60)
        stack.kill("redis-server")
        killed_at = time.monotonic()
        # Asked the moment Redis is gone (make up restarts it after a back-off of 1 s at the soonest):
        # the load's own asks may all have started before the kill and ended after the restart.
        with ThreadPoolExecutor(max_workers=1) as pool, httpx.Client(base_url=stack.base_url) as probe:
            asked_while_down = pool.submit(api.post, "/api/v1/ask", json={"kb": "demo", "question": question})
            to_503 = wait_for_readyz(probe, 503, since=killed_at, deadline=DOWN_DEADLINE)
            to_200 = wait_for_readyz(probe, 200, since=killed_at, deadline=BACK_DEADLINE)
            while_down = asked_while_down.result(timeout=120)
        recovered_at = time.monotonic()
        wait_until(lambda: any(result.started > recovered_at for result in load.results()), timeout=60)
        load.stop()
        results = load.join(timeout=120)

    during = [result for result in results if killed_at <= result.started <= recovered_at]
    assert to_200 <= BACK_DEADLINE
    print(f"\nredis killed: /readyz 503 after {to_503:.1f}s, 200 after {to_200:.1f}s; asks meanwhile: "
          f"{Counter(result.body.get('cache') for result in during)}")
    assert [result for result in results if result.status != 200] == []
    assert while_down.status_code == 200 and while_down.json()["cache"] == "miss", while_down.text
    assert stack.lines(r"down: redis exited with -9 \(SIGKILL\)") and stack.lines(r"restarted redis")
    # The first answers after the outage may still be degraded (never cached) while the workers
    # reconnect to the broker; then one is cached and the next ask is a hit.
    wait_until(lambda: api.post("/api/v1/ask", json={"kb": "demo", "question": question}).json()["cache"] == "hit",
               timeout=60, interval=1)
    assert healthz.failures == []


def embedded_entries(stack: UpStack, kb: str) -> tuple[int, int]:
    """(entries, entries with a vector of their current text) of a knowledge base of the stack."""
    with psycopg.connect(stack.services()["DATABASE_URL"]) as conn:
        row = conn.execute(
            """SELECT count(*), count(m.id) FROM knowledge_faqentry e
               JOIN knowledge_knowledgebase k ON k.id = e.kb_id
               LEFT JOIN knowledge_faqembedding m
                 ON m.entry_id = e.id AND m.model = k.embed_model AND m.content_hash = e.content_hash
               WHERE k.slug = %s""", [kb]).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def test_an_import_whose_embeddings_are_cut_off_by_a_cpu_worker_crash_completes_after_its_restart(
    stack: UpStack, tmp_path: Path,
) -> None:
    """GIVEN an import of 300 entries, committed, whose embeddings the CPU worker is computing
    WHEN the CPU worker is SIGKILLed half-way
    THEN make up restarts it and every entry gets its vector: the batches the dead worker held are
    handed to its successor once unacknowledged for KB_BROKER_VISIBILITY_TIMEOUT."""
    path = tmp_path / "bulk.csv"
    path.write_bytes(faq_csv(300))
    stack.manage("kb_import", str(path), "--kb", "bulk", "--language", "zh")
    wait_until(lambda: embedded_entries(stack, "bulk")[1] > 0, timeout=120, interval=0.1)
    stack.kill("-Q default")
    entries, embedded_at_kill = embedded_entries(stack, "bulk")
    assert entries == 300 and embedded_at_kill < entries
    wait_until(lambda: embedded_entries(stack, "bulk") == (300, 300), timeout=400, interval=2)
    print(f"\n{embedded_at_kill} of 300 entries embedded when the CPU worker was killed; all 300 after its restart")


def test_a_rerank_worker_that_cannot_load_its_model_ends_make_up_after_its_retry_budget(tmp_path: Path) -> None:
    """GIVEN a reranker model path that does not exist
    WHEN `make up` starts (without the demo data, which this does not need)
    THEN the rerank worker exits at every start, make up restarts it 4 times with back-off, then
    stops everything and exits 1, naming the exit code and the log line that says why."""
    up = UpStack(tmp_path / "var", KB_DEMO="0", KB_RERANK_BACKEND="transformers",
                 KB_RERANK_MODEL="/nonexistent/reranker")
    try:
        code = up.wait_exit(timeout=900)
    finally:
        up.stop()
    output = up.output()
    print(f"\nmake up output:\n{output}")
    assert code == 1
    assert len(up.lines(r"down: rerank exited with 70 ")) == 4
    assert [line.split(" in ")[-1] for line in up.lines("restarting in")] == ["1s", "2s", "4s", "8s"]
    assert up.lines(r"giving up: rerank exited with 70: it ended 5 times in a row")
    assert up.lines(r"rerank worker stopping: the transformers engine could not load /nonexistent/reranker")
    assert up.lines("stopping web") and up.lines("stopping postgres")
    assert "ready: kbservice is serving" not in output
