"""`make up`: the embedded stack and the product, in the foreground, until Ctrl-C.

Starts (or reattaches to) Postgres+pgvector and Redis with data under var/, migrates, loads the demo
knowledge base, then runs the web server, a CPU Celery worker and the rerank Celery worker. Prints
the URLs and a ready line once /readyz answers 200. Ctrl-C stops everything it started.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))

from kbservice.embedded import (  # noqa: E402  (needs the checkout on sys.path)
    VAR_DIR,
    EmbeddedPostgres,
    EmbeddedRedis,
    clear_services,
    wait_for_http_ok,
    write_services,
)

PYTHON = sys.executable
READY_TIMEOUT = float(os.environ.get("KB_READY_TIMEOUT", "300"))


def log(message: str) -> None:
    print(f"[kbservice] {message}", flush=True)


class Stack:
    def __init__(self) -> None:
        self.processes: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.postgres: EmbeddedPostgres | None = None
        self.redis: EmbeddedRedis | None = None
        self.log_dir = VAR_DIR / "log"
        self.log_dir.mkdir(parents=True, exist_ok=True)

    def start_services(self) -> dict[str, str]:
        self.postgres = EmbeddedPostgres.start(VAR_DIR / "pgdata")
        self.postgres.ensure_database("kbservice")
        log(f"postgres  127.0.0.1:{self.postgres.port} (data in var/pgdata)")
        self.redis = EmbeddedRedis.start(VAR_DIR / "redis")
        log(f"redis     127.0.0.1:{self.redis.port}")
        database_url = os.environ.get("DATABASE_URL") or self.postgres.url("kbservice")
        redis_url = os.environ.get("REDIS_URL") or self.redis.url()
        write_services(database_url, redis_url)
        return {"DATABASE_URL": database_url, "REDIS_URL": redis_url}

    def manage(self, env: dict[str, str], *args: str) -> None:
        subprocess.run([PYTHON, "manage.py", *args], cwd=BASE_DIR, env=env, check=True)

    def spawn(self, name: str, args: list[str], env: dict[str, str]) -> None:
        log_file = (self.log_dir / f"{name}.log").open("ab")
        # Own process group: Ctrl-C reaches us, and we stop children in order, not all at once.
        process = subprocess.Popen(args, cwd=BASE_DIR, env=env, stdout=log_file, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        self.processes.append((name, process))

    def stop(self) -> None:
        for name, process in reversed(self.processes):
            if process.poll() is None:
                log(f"stopping {name}")
                process.terminate()
        for _name, process in reversed(self.processes):
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        if self.redis is not None:
            log("stopping redis")
            self.redis.stop()
        if self.postgres is not None and self.postgres.started_here:
            log("stopping postgres")
            self.postgres.stop()
        clear_services()

    def exited(self) -> str | None:
        for name, process in self.processes:
            if process.poll() is not None:
                return f"{name} exited with {process.returncode}: see var/log/{name}.log"
        return None


def main() -> int:
    port = int(os.environ.get("KB_PORT", "8000"))
    host = os.environ.get("KB_HOST", "127.0.0.1")
    stack = Stack()
    stopping = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        if not stopping:
            stopping = True
            raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    try:
        env = {**os.environ, **stack.start_services()}
        stack.manage(env, "migrate", "--no-input", "-v", "0")
        stack.manage(env, "kb_load_demo")
        # Demo users (passwords printed once, when created) and the /demo/ page's widget key for this origin.
        stack.manage({**env, "KB_HOST": host, "KB_PORT": str(port)}, "kb_setup_demo_access")
        stack.spawn("web", [PYTHON, "-m", "gunicorn", "kbservice.wsgi", "--bind", f"{host}:{port}",
                            "--access-logfile", "-"], env)
        stack.spawn("worker", [PYTHON, "-m", "celery", "-A", "kbservice", "worker", "-Q", "default",
                               "-c", "2", "-n", f"cpu-{port}@%h", "-l", "INFO"], env)
        # One process holds the reranker; its threads feed the micro-batcher (a prefork child is
        # daemonic and could not start vLLM's engine process).
        concurrency = os.environ.get("KB_RERANK_CONCURRENCY", "16")
        rerank_queue = os.environ.get("KB_RERANK_QUEUE", "rerank")
        stack.spawn("rerank", [PYTHON, "-m", "celery", "-A", "kbservice", "worker", "-Q", rerank_queue,
                               "-P", "threads", "-c", concurrency, "--prefetch-multiplier", "1",
                               "-n", f"rerank-{port}@%h", "-l", "INFO"], env)
        base = f"http://{host}:{port}"
        wait_for_http_ok(f"{base}/readyz", timeout=READY_TIMEOUT, check=stack.exited)
        # The lite engine caches per-document work: warm it so first questions are not degraded.
        stack.manage(env, "kb_rerank_warmup", "--kb", "demo")
        log(f"web       {base}/")
        log(f"demo      {base}/demo/  (the chat widget on the demo knowledge base)")
        log(f"console   {base}/console/  (sign in as demo-agent / demo-manager / demo-admin)")
        log(f"admin     {base}/admin/")
        log(f"API docs  {base}/api/docs/")
        log(f"ready: kbservice is serving on {base} (logs in var/log/; Ctrl-C stops everything)")
        while True:
            problem = stack.exited()
            if problem:
                log(problem)
                return 1
            time.sleep(1)
    except KeyboardInterrupt:
        log("Ctrl-C: shutting down")
        return 0
    except (RuntimeError, TimeoutError, subprocess.CalledProcessError) as exc:
        log(f"failed: {exc}")
        return 1
    finally:
        # A second Ctrl-C (or make forwarding the first one again) must not cut the clean-up short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stack.stop()


if __name__ == "__main__":
    sys.exit(main())
