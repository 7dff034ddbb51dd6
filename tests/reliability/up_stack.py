"""A whole `make up` stack for a test: ``scripts/up.py`` itself, on a free port, with its data in a
folder of its own (``KB_VAR_DIR``), so it never touches the developer's stack or the suite's."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil

from kbservice.embedded import BASE_DIR, free_port
from tests.helpers import wait_until

# The suite's own stack and settings are in the environment: the stack under test must not see them.
_SUITE_ONLY = ("DATABASE_URL", "REDIS_URL", "KB_TEST_STACK", "KB_ENV", "KB_RERANK_TIMEOUT", "KB_RERANK_QUEUE")
# The lite reranker's warm-up vectors, kept between test runs like a developer's var/cache.
RERANK_CACHE = BASE_DIR / "var" / "test" / "rerank-cache"


class UpStack:
    """``scripts/up.py`` as a subprocess; ``stop()`` is what Ctrl-C does."""

    def __init__(self, var_dir: Path, **env: str) -> None:
        self.var_dir = var_dir
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.output_path = var_dir / "up.out"
        var_dir.mkdir(parents=True, exist_ok=True)
        self.env = {**{k: v for k, v in os.environ.items() if k not in _SUITE_ONLY},
                    "KB_VAR_DIR": str(var_dir), "KB_PORT": str(self.port), "KB_RERANK_CACHE_DIR": str(RERANK_CACHE),
                    "KB_LOG_FORMAT": "console",
                    # The healing tests count the rerank worker's work: no calibration asks in its queue.
                    "KB_DEMO_CALIBRATE": "0",
                    # The test polls tickets and asks in bursts: the throttle must not shape what it sees.
                    "KB_THROTTLE_RATE": "1000000/min", **env}
        self._output = self.output_path.open("wb")
        self.process = subprocess.Popen([sys.executable, "scripts/up.py"], cwd=BASE_DIR, env=self.env,
                                        stdout=self._output, stderr=subprocess.STDOUT)

    def output(self) -> str:
        return self.output_path.read_text(errors="replace")

    def lines(self, pattern: str) -> list[str]:
        return [line for line in self.output().splitlines() if re.search(pattern, line)]

    def services(self) -> dict[str, str]:
        """DATABASE_URL and REDIS_URL of the running stack."""
        return dict(json.loads((self.var_dir / "run" / "services.json").read_text()))

    def wait_ready(self, timeout: float = 600) -> None:
        wait_until(lambda: "ready: kbservice is serving" in self.output() or self.process.poll() is not None,
                   timeout=timeout, interval=0.5)
        assert self.process.poll() is None, f"make up ended with {self.process.returncode}:\n{self.output()}"

    def wait_exit(self, timeout: float) -> int:
        return self.process.wait(timeout=timeout)

    def manage(self, *args: str) -> str:
        """``manage.py`` against this stack (it finds it through var/run/services.json)."""
        env = {k: v for k, v in self.env.items() if k not in ("DATABASE_URL", "REDIS_URL")}
        result = subprocess.run([sys.executable, "manage.py", *args], cwd=BASE_DIR, env=env, capture_output=True,
                                text=True, check=True)
        return result.stdout

    def child(self, marker: str) -> psutil.Process:
        """The supervised process whose command line contains ``marker`` (e.g. ``-Q rerank``)."""
        for process in psutil.Process(self.process.pid).children():
            with contextlib.suppress(psutil.NoSuchProcess):
                if marker in " ".join(process.cmdline()):
                    return process
        raise LookupError(f"no child of make up runs {marker!r}")

    def kill(self, marker: str) -> psutil.Process:
        """SIGKILL a supervised process and its own children, as the OOM killer would (parent first,
        so that a prefork parent cannot replace its pool children)."""
        process = self.child(marker)
        members = [process, *process.children(recursive=True)]
        for member in members:
            with contextlib.suppress(psutil.NoSuchProcess):
                member.kill()
        # Gone, sockets closed, before the test goes on: a consumer still blocked in Redis' BRPOP
        # would otherwise be handed the next message and die with it (lost, never unacknowledged).
        psutil.wait_procs(members, timeout=30)
        return process

    def stop(self) -> int:
        """SIGTERM, as a terminal's Ctrl-C or `docker stop` would; kill whatever is left after a minute."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                for process in psutil.Process(self.process.pid).children(recursive=True):
                    with contextlib.suppress(psutil.NoSuchProcess):
                        process.kill()
                self.process.kill()
                self.process.wait()
        self._output.close()
        return self.process.returncode


def readyz(client: httpx.Client) -> tuple[int, dict[str, object]]:
    try:
        response = client.get("/readyz", timeout=10)
    except httpx.HTTPError as exc:
        return 0, {"transport_error": repr(exc)}
    return response.status_code, response.json()


def wait_for_readyz(client: httpx.Client, status: int, *, since: float, deadline: float) -> float:
    """Seconds from ``since`` until /readyz answers ``status``; fails after ``deadline`` seconds."""
    while True:
        code, _ = readyz(client)
        elapsed = time.monotonic() - since
        if code == status:
            return elapsed
        assert elapsed < deadline, f"/readyz still not {status} after {elapsed:.1f}s (last {code})"
        time.sleep(0.25)
