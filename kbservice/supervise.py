"""`make up`'s supervision: restart a part that exits unexpectedly, after a back-off; give up, so
that the caller stops everything, on a part that keeps crashing.

Hand-written rather than supervisord or circus: the policy `make up` needs (give up on the whole
stack after a crash loop, with the exit code and the log lines that explain it; Postgres run by
``pg_ctl``, which daemonizes; ordered shutdown) is a few dozen lines here, and would be
configuration plus an event-listener process there. See README, "What `make up` does on a crash".
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from kbservice.embedded import EmbeddedPostgres, EmbeddedRedis

FIRST_DELAY = 1.0  # seconds before the first restart; doubled on each further crash...
MAX_DELAY = 30.0  # ...up to this
CRASH_BUDGET = 5  # this many crashes in a row end the stack...
STABLE_RUN = 120.0  # ...unless a run lasted this long in between, which starts the count again
STOP_TIMEOUT = 10.0  # a process still running this long after SIGTERM is killed
TAIL_LINES = 8


class Part(Protocol):
    """Something the supervisor starts, watches and stops."""

    name: str
    log_path: Path

    def start(self) -> None: ...

    def ended(self) -> str | None:
        """How the part ended (``"exited with -9"``), or None while it runs."""

    def terminate(self) -> None: ...

    def wait(self, timeout: float) -> None:
        """Wait for a terminated part to end; kill it when it takes longer than ``timeout``."""


def exit_description(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"exited with {code} ({signal.Signals(-code).name})"
    return f"exited with {code}"


class ChildProcess:
    """A command of the product (web, a worker, beat) in its own session, its output in ``log_path``."""

    def __init__(self, name: str, args: list[str], *, cwd: Path, env: dict[str, str], log_path: Path,
                 on_exit: Callable[[], None] = lambda: None) -> None:
        self.name = name
        self.log_path = log_path
        self._on_exit = on_exit
        self._args = args
        self._cwd = cwd
        self._env = env
        self._process: subprocess.Popen[bytes] | None = None
        self.log_offset = 0  # where this run's output starts in the log

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.log_offset = log.tell()
            # Own session: a Ctrl-C reaches only `make up`, which stops its children in order.
            self._process = subprocess.Popen(self._args, cwd=self._cwd, env=self._env, stdout=log,
                                             stderr=subprocess.STDOUT, start_new_session=True)

    def ended(self) -> str | None:
        if self._process is None or self._process.poll() is None:
            return None
        # Pool children of a killed Celery worker outlive it, still holding tasks: end them too.
        self._kill_group()
        self._on_exit()
        return exit_description(self._process.returncode)

    def terminate(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()

    def wait(self, timeout: float) -> None:
        if self._process is None:
            return
        try:
            self._process.wait(timeout=max(timeout, 0))
        except subprocess.TimeoutExpired:
            self._kill_group()
            self._process.wait()
        self._kill_group()

    def _kill_group(self) -> None:
        assert self._process is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._process.pid, signal.SIGKILL)  # the session's id is its leader's pid


class RedisPart:
    """Embedded Redis, restarted on the same port and data folder, so clients reconnect by themselves."""

    name = "redis"

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.log_path = data_dir / "redis.log"
        self.server: EmbeddedRedis | None = None

    def start(self) -> None:
        self.server = EmbeddedRedis.start(self.data_dir, port=self.server.port if self.server else None)

    def ended(self) -> str | None:
        code = self.server.process.poll() if self.server else None
        return None if code is None else exit_description(code)

    def terminate(self) -> None:
        if self.server is not None and self.server.process.poll() is None:
            self.server.process.terminate()

    def wait(self, timeout: float) -> None:
        if self.server is not None:
            self.server.stop()


class PostgresPart:
    """Embedded Postgres, restarted on the same port and data folder. Stopped at the end only when
    this run started it (a server already running on the folder is someone else's)."""

    name = "postgres"

    def __init__(self, pgdata: Path) -> None:
        self.pgdata = pgdata
        self.log_path = pgdata / "server.log"
        self.server: EmbeddedPostgres | None = None
        self._owned = False

    def start(self) -> None:
        self.server = EmbeddedPostgres.start(self.pgdata, port=self.server.port if self.server else None)
        self._owned = self._owned or self.server.started_here

    def ended(self) -> str | None:
        return None if self.server is None or self.server.running() else "is no longer running"

    def terminate(self) -> None:
        pass  # `pg_ctl stop -m fast` in wait(): Postgres goes last, after everything that uses it

    def wait(self, timeout: float) -> None:
        if self.server is not None and self._owned:
            self.server.stop()


class GaveUp(Exception):
    """A part crashed ``CRASH_BUDGET`` times in a row; the message says how and where to read why."""


@dataclass
class _Watched:
    part: Part
    started_at: float = field(default_factory=time.monotonic)
    crashes: int = 0
    restart_at: float | None = None


class Supervisor:
    """Services (Postgres, Redis) start first and stop last, one by one; processes stop together."""

    def __init__(self, *, log: Callable[[str], None], display_path: Callable[[Path], str] = str) -> None:
        self._log = log
        self._display_path = display_path
        self._services: list[_Watched] = []
        self._processes: list[_Watched] = []

    def start_service(self, part: Part) -> None:
        part.start()
        self._services.append(_Watched(part))

    def start_process(self, part: Part) -> None:
        part.start()
        self._processes.append(_Watched(part))

    def check(self) -> None:
        """Restart the parts that exited and whose back-off has passed. Raises GaveUp."""
        now = time.monotonic()
        for watched in self._services + self._processes:
            part = watched.part
            if watched.restart_at is not None:
                if now >= watched.restart_at:
                    watched.restart_at = None
                    watched.started_at = now
                    self._restart(watched)
                continue
            how = part.ended()
            if how is None:
                continue
            ran = now - watched.started_at
            watched.crashes = 1 if ran >= STABLE_RUN else watched.crashes + 1
            where = self._display_path(part.log_path)
            if watched.crashes >= CRASH_BUDGET:
                raise GaveUp(f"{part.name} {how}: it ended {watched.crashes} times in a row, each time within "
                             f"{STABLE_RUN:.0f}s of starting; its last lines ({where}):\n{self._tail(part)}")
            delay = min(MAX_DELAY, FIRST_DELAY * 2 ** (watched.crashes - 1))
            self._log(f"down: {part.name} {how} after {ran:.0f}s (see {where}); restarting in {delay:.0f}s")
            watched.restart_at = now + delay

    def _restart(self, watched: _Watched) -> None:
        try:
            watched.part.start()
        except (OSError, RuntimeError, TimeoutError, subprocess.CalledProcessError) as exc:
            # Counted like a crash: the next check() sees it ended, and backs off or gives up.
            self._log(f"{watched.part.name} did not start: {exc}")
            return
        self._log(f"restarted {watched.part.name} (attempt {watched.crashes} of {CRASH_BUDGET - 1})")

    def _tail(self, part: Part) -> str:
        try:
            with part.log_path.open("rb") as log:
                # This run's output (a service's log is not ours to offset), at most its last 64 KiB.
                end = log.seek(0, os.SEEK_END)
                log.seek(max(getattr(part, "log_offset", 0), end - 65536))
                lines = log.read().decode(errors="replace").splitlines()
        except OSError:
            return "    (no log)"
        return "\n".join(f"    {line}" for line in [line for line in lines if line.strip()][-TAIL_LINES:])

    def stop(self) -> None:
        """SIGTERM every process (last started first), wait up to STOP_TIMEOUT for all of them
        together, kill the rest; then stop Redis, then Postgres."""
        for watched in reversed(self._processes):
            if watched.part.ended() is None:
                self._log(f"stopping {watched.part.name}")
            watched.part.terminate()
        deadline = time.monotonic() + STOP_TIMEOUT
        for watched in reversed(self._processes):
            watched.part.wait(deadline - time.monotonic())
        for watched in reversed(self._services):
            self._log(f"stopping {watched.part.name}")
            watched.part.terminate()
            watched.part.wait(STOP_TIMEOUT)
        self._processes.clear()
        self._services.clear()
