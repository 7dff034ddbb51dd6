from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import psutil
import psycopg
import pytest
import redis
from django.conf import settings
from django.db import OperationalError, connection

from kbservice.embedded import BASE_DIR

WORKER_LOG_DIR = BASE_DIR / "var" / "test" / "logs"


class WorkerProcess:
    """A real `celery worker` subprocess bound to the test database and the test Redis."""

    def __init__(self, *, queues: str, name: str, env: dict[str, str], pool: str, concurrency: int) -> None:
        WORKER_LOG_DIR.mkdir(parents=True, exist_ok=True)
        # One log per worker and test process: "ready." must come from this worker, not another run's.
        self.log_path = WORKER_LOG_DIR / f"{name}-{os.getpid()}.log"
        self.name = name
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "kbservice", "worker", "-Q", queues, "-P", pool,
             "-c", str(concurrency),
             "-n", f"{name}@%h", "--prefetch-multiplier", "1", "--without-gossip", "--without-mingle",
             "-l", "INFO"],
            cwd=BASE_DIR, env=env, stdout=self._log, stderr=subprocess.STDOUT,
        )
        self.wait_ready()

    def wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"worker {self.name} exited: see {self.log_path}")
            if b"ready." in self.log_path.read_bytes():
                return
            time.sleep(0.2)
        raise TimeoutError(f"worker {self.name} not ready after {timeout}s: see {self.log_path}")

    def kill(self) -> None:
        """SIGKILL the worker and its pool children at once, as an OOM kill or a lost host would:
        no warm shutdown, nothing acknowledged or handed back."""
        self._signal_all(signal.SIGKILL)
        self.process.wait()
        self._log.close()

    def freeze(self) -> None:
        """SIGSTOP the worker and its pool children: what its log says stays true until thaw or kill."""
        self._signal_all(signal.SIGSTOP)

    def thaw(self) -> None:
        self._signal_all(signal.SIGCONT)

    def _signal_all(self, signum: signal.Signals) -> None:
        with contextlib.suppress(psutil.NoSuchProcess):
            worker = psutil.Process(self.process.pid)
            # Listed first, signalled parent first: a prefork parent must not replace killed children.
            for process in [worker, *worker.children(recursive=True)]:
                with contextlib.suppress(psutil.NoSuchProcess):
                    process.send_signal(signum)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


def _test_database_url() -> str:
    params = connection.settings_dict
    return f"postgres://{params['USER']}@{params['HOST']}:{params['PORT']}/{params['NAME']}"


def _worker_env(extra_env: dict[str, str]) -> dict[str, str]:
    return {**os.environ, "DATABASE_URL": _test_database_url(), "REDIS_URL": settings.REDIS_URL,
            "KB_LOG_FORMAT": "console", **extra_env}


_worker_counter = iter(range(10_000))


def _worker_factory(started: list[WorkerProcess]) -> Callable[..., WorkerProcess]:
    def start(queues: str = "default", *, pool: str = "solo", concurrency: int = 1, **extra_env: str) -> WorkerProcess:
        worker = WorkerProcess(queues=queues, name=f"test-{queues.replace(',', '-')}-{next(_worker_counter)}",
                               env=_worker_env(extra_env), pool=pool, concurrency=concurrency)
        started.append(worker)
        return worker

    return start


@pytest.fixture
def start_worker(django_db_setup: None) -> Iterator[Callable[..., WorkerProcess]]:
    """Factory for real Celery workers on the test database (tests using them need transactional_db).
    The workers a test starts are stopped when that test ends: none idles on until the session does."""
    started: list[WorkerProcess] = []
    yield _worker_factory(started)
    for worker in started:
        worker.stop()


@pytest.fixture(scope="session")
def session_worker(django_db_setup: None) -> Iterator[Callable[..., WorkerProcess]]:
    """The same factory for the few workers shared by the whole session (one per queue)."""
    started: list[WorkerProcess] = []
    yield _worker_factory(started)
    for worker in started:
        worker.stop()


def start_rerank_worker(start_worker: Callable[..., WorkerProcess], **extra_env: str) -> WorkerProcess:
    """A rerank worker as production runs it: a thread pool feeding the micro-batcher. Returns
    once it has loaded its engine (its first heartbeat), as readiness would report it."""
    from django.test import override_settings

    from rerank.heartbeat import rerank_workers_alive
    from tests.helpers import wait_until

    queue = extra_env.get("KB_RERANK_QUEUE", "rerank")
    worker = start_worker(queue, pool="threads", concurrency=8, **extra_env)
    with override_settings(KB_RERANK_QUEUE=queue):  # readiness looks at the queue this process sends to
        wait_until(lambda: any(w["hostname"].startswith(worker.name) for w in rerank_workers_alive()), timeout=300)
    return worker


@pytest.fixture(scope="session")
def cpu_worker(session_worker: Callable[..., WorkerProcess]) -> WorkerProcess:
    return session_worker("default")


@pytest.fixture
def redis_client() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL)


@pytest.fixture(scope="session", autouse=True)
def _flush_survives_deadlocks() -> Iterator[None]:
    """A session-wide worker may still be finishing an earlier test's task (one query over two
    tables) while a transactional test's teardown truncates every table; Postgres then aborts one
    side as a deadlock, sometimes the TRUNCATE. Retry it: the worker's query is short."""
    from django.db.backends.postgresql.operations import DatabaseOperations

    flush = DatabaseOperations.execute_sql_flush

    def flush_retrying(self: DatabaseOperations, sql_list: list[str]) -> None:
        for attempt in range(5):
            try:
                return flush(self, sql_list)
            except OperationalError as exc:
                if not isinstance(exc.__cause__, psycopg.errors.DeadlockDetected) or attempt == 4:
                    raise
                time.sleep(0.2)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(DatabaseOperations, "execute_sql_flush", flush_retrying)
        yield


@pytest.fixture(autouse=True)
def _clean_cache() -> Generator[None]:
    """Forget cached answers and throttle counts between tests. Not cache.clear(): that flushes the
    whole Redis database, with the broker's queues and the workers' heartbeats in it."""
    from kbservice.api.throttling import KEY_PREFIX

    yield
    with contextlib.suppress(Exception):  # a test may have stopped Redis on purpose
        client = redis.Redis.from_url(settings.REDIS_URL)
        for pattern in ("kb:answer:*", f"{KEY_PREFIX}*"):
            keys = list(client.scan_iter(match=pattern, count=1000))
            if keys:
                client.delete(*keys)


@pytest.fixture
def tmp_file(tmp_path: Path) -> Callable[[str, bytes], Path]:
    def write(name: str, content: bytes) -> Path:
        path = tmp_path / name
        path.write_bytes(content)
        return path

    return write


@pytest.fixture
def staff_user(db: None) -> Callable[..., Any]:
    """Factory for signed-in staff personas by role ("agent", "knowledge manager", "admin"), with the
    same groups and permissions `kb_setup_demo_access` gives the demo users."""
    from django.contrib.auth.models import User

    from chat.services.demo_access import demo_groups_ensure

    def make(role: str, username: str | None = None) -> User:
        groups = demo_groups_ensure()
        user = User.objects.create_user(username=username or role.replace(" ", "-"), password="unused-in-tests",
                                        is_staff=True, is_superuser=role == "admin")
        user.groups.add(groups[role])
        return user

    return make


@pytest.fixture(scope="session")
def rerank_worker(session_worker: Callable[..., WorkerProcess]) -> WorkerProcess:
    """The session's one rerank worker on the default rerank queue."""
    return start_rerank_worker(session_worker)


@pytest.fixture(scope="session")
def tiny_qwen3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny random Qwen3 reranker (tests/rerank/conftest.py), built once for the session."""
    from tests.rerank.conftest import build_tiny_qwen3_reranker

    return build_tiny_qwen3_reranker(tmp_path_factory.mktemp("tiny-qwen3-reranker"))
