"""Shared set-up of the benchmarks: their own throwaway stack, never the developer's data.

``bench_stack()`` starts an EmbeddedPostgres (+pgvector) and an EmbeddedRedis on free loopback ports
with their data in a fresh folder under ``var/bench/``, points DATABASE_URL / REDIS_URL / KB_ENV at
them *before* ``django.setup()``, runs ``migrate``, and on exit (normal end, exception, Ctrl-C or
SIGTERM) stops every process it spawned, Redis, Postgres, and deletes the folder.

    with bench_stack("recall") as stack:
        ...  # Django is configured; stack.spawn(...) / stack.manage(...) run against the same stack
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from kbservice.embedded import VAR_DIR, EmbeddedPostgres, EmbeddedRedis, free_port, wait_for_http_ok  # noqa: E402

BENCH_DIR = VAR_DIR / "bench"
DEMO_FILE = ROOT / "knowledge" / "data" / "demo_faq.jsonl"
READY_TIMEOUT = 300.0
PYTHON = sys.executable
# What `make up` runs: KB_ENV's default. Only "production" changes behaviour (security settings).
BENCH_KB_ENV = "embedded"


def log(message: str) -> None:
    print(f"[bench] {message}", flush=True)


class BenchStack:
    """Postgres + Redis in ``run_dir``, the environment pointing at them, and spawned processes."""

    def __init__(self, label: str, *, extra_env: dict[str, str] | None = None, keep: bool = False) -> None:
        BENCH_DIR.mkdir(parents=True, exist_ok=True)
        self.run_dir = Path(tempfile.mkdtemp(prefix=f"{label}-", dir=BENCH_DIR))
        self.log_dir = self.run_dir / "log"
        self.log_dir.mkdir()
        self.extra_env = dict(extra_env or {})
        self.keep = keep
        self.postgres: EmbeddedPostgres | None = None
        self.redis: EmbeddedRedis | None = None
        self.processes: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.env: dict[str, str] = {}

    # --- lifecycle --------------------------------------------------------------------------------
    def start(self) -> None:
        started = time.perf_counter()
        self.postgres = EmbeddedPostgres.start(self.run_dir / "pgdata")
        self.postgres.ensure_database("kbservice")
        self.redis = EmbeddedRedis.start(self.run_dir / "redis", persist=False)
        os.environ.update(
            DJANGO_SETTINGS_MODULE="kbservice.settings",
            KB_ENV=BENCH_KB_ENV,
            DATABASE_URL=self.postgres.url("kbservice"),
            REDIS_URL=self.redis.url(),
            TOKENIZERS_PARALLELISM="false",
            **self.extra_env,
        )
        self.env = dict(os.environ)
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", interactive=False, verbosity=0)
        log(f"stack: postgres 127.0.0.1:{self.postgres.port}, redis 127.0.0.1:{self.redis.port}, "
            f"data in {self.run_dir.relative_to(ROOT)} (up + migrate {time.perf_counter() - started:.1f}s)")

    def stop(self) -> None:
        for name, process in reversed(self.processes):
            if process.poll() is None:
                log(f"stopping {name}")
                process.terminate()
        for _name, process in reversed(self.processes):
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                # Its own session (start_new_session): the group id is the pid of the process we started.
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        self.processes.clear()
        if "django" in sys.modules:
            from django.db import connections

            connections.close_all()
        if self.redis is not None:
            self.redis.stop()
        if self.postgres is not None:
            self.postgres.stop()
        if self.keep:
            shutil.rmtree(self.run_dir / "pgdata", ignore_errors=True)
            log(f"logs kept in {self.log_dir.relative_to(ROOT)}")
        else:
            shutil.rmtree(self.run_dir, ignore_errors=True)
        log("stack stopped and removed")

    # --- processes --------------------------------------------------------------------------------
    def spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        """Run ``args`` in the checkout against this stack, output to log/<name>.log."""
        log_file = (self.log_dir / f"{name}.log").open("ab")
        process = subprocess.Popen(args, cwd=ROOT, env=self.env, stdout=log_file, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        self.processes.append((name, process))
        return process

    def manage(self, *args: str) -> float:
        """``manage.py <args>`` against this stack (output to log/manage.log); returns seconds taken."""
        started = time.perf_counter()
        with (self.log_dir / "manage.log").open("ab") as log_file:
            result = subprocess.run([PYTHON, "manage.py", *args], cwd=ROOT, env=self.env, stdout=log_file,
                                    stderr=subprocess.STDOUT, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"manage.py {' '.join(args)} exited with {result.returncode}:\n"
                               f"{self.tail('manage')}")
        return time.perf_counter() - started

    def exited(self) -> str | None:
        for name, process in self.processes:
            if process.poll() is not None:
                return f"{name} exited with {process.returncode}:\n{self.tail(name)}"
        return None

    def tail(self, name: str, lines: int = 30) -> str:
        path = self.log_dir / f"{name}.log"
        if not path.exists():
            return "(no log)"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def wait_http_ok(self, url: str, *, timeout: float) -> None:
        wait_for_http_ok(url, timeout=timeout, check=self.exited)

    @staticmethod
    def free_port() -> int:
        return free_port()


@contextmanager
def bench_stack(label: str, *, extra_env: dict[str, str] | None = None, keep: bool = False) -> Iterator[BenchStack]:
    """The stack, started and migrated; always torn down, also on Ctrl-C and SIGTERM."""

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    stack = BenchStack(label, extra_env=extra_env, keep=keep)
    try:
        stack.start()
        yield stack
    finally:
        # A second Ctrl-C must not cut the clean-up short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            stack.stop()
        finally:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.signal(signal.SIGTERM, previous)


def start_product(stack: BenchStack) -> str:
    """What scripts/up.py does after migrate, on a free port; returns the base URL."""
    seconds = stack.manage("kb_load_demo", "--file", str(DEMO_FILE))
    log(f"kb_load_demo --file {DEMO_FILE.relative_to(ROOT)}: {seconds:.1f}s")
    port = stack.free_port()
    stack.spawn("web", [PYTHON, "-m", "gunicorn", "kbservice.wsgi", "--bind", f"127.0.0.1:{port}",
                        "--access-logfile", "-"])
    stack.spawn("worker", [PYTHON, "-m", "celery", "-A", "kbservice", "worker", "-Q", "default",
                           "-c", "2", "-n", f"cpu-{port}@%h", "-l", "INFO"])
    stack.spawn("rerank", [PYTHON, "-m", "celery", "-A", "kbservice", "worker", "-Q", "rerank",
                           "-P", "threads", "-c", "16", "--prefetch-multiplier", "1",
                           "-n", f"rerank-{port}@%h", "-l", "INFO"])
    base = f"http://127.0.0.1:{port}"
    started = time.perf_counter()
    stack.wait_http_ok(f"{base}/readyz", timeout=READY_TIMEOUT)
    log(f"gunicorn + CPU worker + rerank worker ready in {time.perf_counter() - started:.1f}s")
    seconds = stack.manage("kb_rerank_warmup", "--kb", "demo")
    log(f"kb_rerank_warmup --kb demo: {seconds:.1f}s")
    return base


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    index = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[index]
