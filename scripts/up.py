"""`make up`: the embedded stack and the product, in the foreground, until Ctrl-C.

Starts (or reattaches to) Postgres+pgvector and Redis with data under var/ (``KB_VAR_DIR``),
migrates, loads the demo knowledge base (not with ``KB_DEMO=0``), then runs the web server, a CPU
Celery worker, the rerank Celery worker and Celery beat. Prints the URLs and a ready line once
/readyz answers 200, then a line whenever readiness is lost or comes back. A part that exits is restarted with back-off
(kbservice/supervise.py); one that keeps crashing ends the whole stack with exit code 1. Ctrl-C or
SIGTERM stops everything it started: processes first, then Redis, then Postgres.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from functools import partial
from pathlib import Path
from types import FrameType

from celery.utils.nodenames import host_format

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))

from kbservice.embedded import VAR_DIR, clear_services, write_services  # noqa: E402  (needs the checkout on sys.path)
from kbservice.supervise import ChildProcess, GaveUp, PostgresPart, RedisPart, Supervisor  # noqa: E402
from rerank.heartbeat import rerank_worker_forget  # noqa: E402

PYTHON = sys.executable
READY_TIMEOUT = float(os.environ.get("KB_READY_TIMEOUT", "300"))
READINESS_POLL = 1.0  # seconds between two /readyz probes of the watcher
SUPERVISE_POLL = 0.2


def log(message: str) -> None:
    print(f"[kbservice] {message}", flush=True)


def shown(path: Path) -> str:
    """A path as the operator finds it: relative to the checkout when inside it."""
    return str(path.relative_to(BASE_DIR)) if path.is_relative_to(BASE_DIR) else str(path)


def rerank_node(port: int) -> str:
    return f"rerank-{port}@%h"  # %h: Celery puts the host name in


def product_processes(*, host: str, port: int) -> dict[str, list[str]]:
    celery = [PYTHON, "-m", "celery", "-A", "kbservice"]
    concurrency = os.environ.get("KB_RERANK_CONCURRENCY", "16")
    rerank_queue = os.environ.get("KB_RERANK_QUEUE", "rerank")
    return {
        "web": [PYTHON, "-m", "gunicorn", "kbservice.wsgi", "--bind", f"{host}:{port}", "--access-logfile", "-"],
        "worker": [*celery, "worker", "-Q", "default", "-c", "2", "-n", f"cpu-{port}@%h", "-l", "INFO"],
        # One process holds the reranker; its threads feed the micro-batcher (a prefork child is
        # daemonic and could not start vLLM's engine process).
        "rerank": [*celery, "worker", "-Q", rerank_queue, "-P", "threads", "-c", concurrency,
                   "--prefetch-multiplier", "1", "-n", rerank_node(port), "-l", "INFO"],
        "beat": [*celery, "beat", "-s", str(VAR_DIR / "run" / "celerybeat-schedule"), "-l", "INFO"],
    }


class ReadinessWatcher(threading.Thread):
    """Probes /readyz and, once the stack has been ready, says when it stops being ready (naming the
    failing checks) and when it is ready again."""

    def __init__(self, url: str) -> None:
        super().__init__(name="readiness", daemon=True)
        self.url = url
        self.ready = threading.Event()  # set at the first 200
        self._stopping = threading.Event()
        self._failing: set[str] = set()

    def run(self) -> None:
        while not self._stopping.is_set():
            failing = self.probe()
            if not failing:
                if self._failing and self.ready.is_set():
                    log("ready again: every readiness check passes")
                self.ready.set()
            elif set(failing) != self._failing and self.ready.is_set():
                log("not ready: " + "; ".join(f"{name}: {error}" for name, error in failing.items()))
            self._failing = set(failing)
            self._stopping.wait(READINESS_POLL)

    def probe(self) -> dict[str, str]:
        """The failing checks by name with their errors; {} when /readyz answers 200."""
        try:
            with urllib.request.urlopen(self.url, timeout=10):
                return {}
        except urllib.error.HTTPError as exc:
            try:
                checks = json.loads(exc.read())["checks"]
            except (ValueError, KeyError):
                return {"web": f"/readyz answered {exc.code}"}
            return {name: check.get("error", "") for name, check in checks.items() if not check.get("ok")}
        except OSError as exc:  # down, or every thread busy: either way it cannot serve now
            return {"web": f"/readyz did not answer ({exc})"}

    def stop(self) -> None:
        self._stopping.set()


def supervise_until_ready(stack: Supervisor, watcher: ReadinessWatcher) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while not watcher.ready.wait(SUPERVISE_POLL):
        stack.check()
        if time.monotonic() > deadline:
            raise TimeoutError(f"{watcher.url} did not answer 200 within {READY_TIMEOUT:.0f}s: "
                               f"{watcher.probe()}")


def main() -> int:
    port = int(os.environ.get("KB_PORT", "8000"))
    host = os.environ.get("KB_HOST", "127.0.0.1")
    base = f"http://{host}:{port}"
    stack = Supervisor(log=log, display_path=shown)
    watcher = ReadinessWatcher(f"{base}/readyz")
    stopping = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        if not stopping:
            stopping = True
            raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    calibrating: subprocess.Popen[bytes] | None = None
    try:
        postgres = PostgresPart(VAR_DIR / "pgdata")
        stack.start_service(postgres)
        assert postgres.server is not None
        postgres.server.ensure_database("kbservice")
        log(f"postgres  127.0.0.1:{postgres.server.port} (data in {shown(postgres.pgdata)})")
        redis = RedisPart(VAR_DIR / "redis")
        stack.start_service(redis)
        assert redis.server is not None
        log(f"redis     127.0.0.1:{redis.server.port}")
        database_url = os.environ.get("DATABASE_URL") or postgres.server.url("kbservice")
        redis_url = os.environ.get("REDIS_URL") or redis.server.url()
        write_services(database_url, redis_url)
        env = {**os.environ, "DATABASE_URL": database_url, "REDIS_URL": redis_url}

        def manage(*args: str, **extra_env: str) -> None:
            subprocess.run([PYTHON, "manage.py", *args], cwd=BASE_DIR, env={**env, **extra_env}, check=True)

        manage("migrate", "--no-input", "-v", "0")
        demo = os.environ.get("KB_DEMO", "1") != "0"
        if demo:
            manage("kb_load_demo")
            # Demo users (passwords printed once, when created) and the /demo/ page's widget key for this origin.
            manage("kb_setup_demo_access", KB_HOST=host, KB_PORT=str(port))
        # A dead rerank worker is reported (and given up on by the asks waiting for it) at once.
        forget_rerank = partial(rerank_worker_forget, redis_url=redis_url, hostname=host_format(rerank_node(port)))
        for name, args in product_processes(host=host, port=port).items():
            log_path = VAR_DIR / "log" / f"{name}.log"
            stack.start_process(ChildProcess(name, args, cwd=BASE_DIR, env=env, log_path=log_path,
                                             on_exit=forget_rerank if name == "rerank" else lambda: None))
        # Ready includes the rerank worker's warm-up: the first questions are reranked, not degraded.
        watcher.start()
        supervise_until_ready(stack, watcher)
        if demo and os.environ.get("KB_DEMO_CALIBRATE", "1") != "0":
            # Uncalibrated bases never auto-answer: calibrate the demo on its similar questions, for the
            # reranker now running (once: a later start finds it calibrated). In the background, so the
            # parts stay supervised meanwhile; not fatal: the stack serves, suggesting, without it.
            log("calibrating the demo knowledge base on its similar questions in the background; until it is "
                "done the demo suggests rather than answers (KB_DEMO_CALIBRATE=0 skips)")
            calibrating = subprocess.Popen([PYTHON, "manage.py", "kb_calibrate", "--kb", "demo", "--unless-calibrated"],
                                           cwd=BASE_DIR, env=env)
        log(f"web       {base}/")
        if demo:
            log(f"demo      {base}/demo/  (the chat widget on the demo knowledge base)")
            log(f"console   {base}/console/  (sign in as demo-agent / demo-manager / demo-admin)")
        log(f"admin     {base}/admin/")
        log(f"API docs  {base}/api/docs/")
        log(f"ready: kbservice is serving on {base} (logs in {shown(VAR_DIR / 'log')}; Ctrl-C stops everything)")
        while True:
            stack.check()
            if calibrating is not None and calibrating.poll() is not None:
                log("the demo knowledge base is calibrated" if calibrating.returncode == 0 else
                    f"calibrating the demo failed (exit {calibrating.returncode}); it suggests until "
                    "`manage.py kb_calibrate --kb demo` succeeds")
                calibrating = None
            time.sleep(SUPERVISE_POLL)
    except KeyboardInterrupt:
        log("shutting down")
        return 0
    except GaveUp as exc:
        log(f"giving up: {exc}")
        return 1
    except (RuntimeError, TimeoutError, subprocess.CalledProcessError) as exc:
        log(f"failed: {exc}")
        return 1
    finally:
        # A second Ctrl-C (or make forwarding the first one again) must not cut the clean-up short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        watcher.stop()
        if calibrating is not None:
            calibrating.terminate()  # a calibration records itself at the end: cut short, it changes nothing
            calibrating.wait()
        stack.stop()
        clear_services()


if __name__ == "__main__":
    sys.exit(main())
