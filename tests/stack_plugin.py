"""Starts the test suite's own Postgres (+pgvector) and Redis on free ports before Django loads
its settings, so `make test` needs nothing running and never touches the `make up` data."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

from kbservice.embedded import VAR_DIR, EmbeddedPostgres, EmbeddedRedis

_started: list[Any] = []
_run_dirs: list[Path] = []


def suite_redis() -> EmbeddedRedis:
    """The suite's Redis, for tests that stop and restart it on purpose."""
    return next(service for service in _started if isinstance(service, EmbeddedRedis))


def restart_test_redis() -> EmbeddedRedis:
    """Start the suite's Redis again on the same port (its clients reconnect by themselves)."""
    old = suite_redis()
    old.stop()
    new = EmbeddedRedis.start(old.data_dir, persist=False, port=old.port)
    _started[_started.index(old)] = new
    return new


def suite_postgres() -> EmbeddedPostgres:
    """The suite's Postgres, for tests that stop and restart it on purpose."""
    return next(service for service in _started if isinstance(service, EmbeddedPostgres))


def restart_test_postgres() -> EmbeddedPostgres:
    """Start the suite's Postgres again on the same port and data folder (after a fast shutdown, if
    it was still running). Clients must drop their broken connections themselves."""
    old = suite_postgres()
    old.stop()
    new = EmbeddedPostgres.start(old.pgdata, port=old.port)
    _started[_started.index(old)] = new
    return new


@pytest.hookimpl(hookwrapper=True)
def pytest_load_initial_conftests(early_config: pytest.Config, parser: Any, args: list[str]) -> Generator[None]:
    # Each process that runs tests has a stack of its own: under pytest-xdist every worker does (the
    # suite's tests stop and restart their Redis and Postgres), and the controller, which runs none, has none.
    xdist_controller = "PYTEST_XDIST_WORKER" not in os.environ and bool(
        getattr(early_config.known_args_namespace, "numprocesses", None))
    if "KB_TEST_STACK" not in os.environ and not xdist_controller:
        # A fresh data folder per run: concurrent runs in one checkout never share (or stop) a server.
        (VAR_DIR / "test").mkdir(parents=True, exist_ok=True)
        run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=VAR_DIR / "test"))
        _run_dirs.append(run_dir)
        postgres = EmbeddedPostgres.start(run_dir / "pgdata")
        postgres.ensure_database("kbservice")
        redis = EmbeddedRedis.start(run_dir / "redis", persist=False)
        _started.extend([redis, postgres])
        # Two shared cores run the web server, workers and tests at once: a generous rerank deadline
        # keeps reranked answers deterministic; tests of the deadline itself set their own.
        os.environ.setdefault("KB_RERANK_TIMEOUT", "30")
        os.environ.update(
            KB_TEST_STACK="1",
            KB_ENV="test",
            DATABASE_URL=postgres.url("kbservice"),
            REDIS_URL=redis.url(),
        )
    yield


def pytest_unconfigure(config: pytest.Config) -> None:
    for service in _started:
        service.stop()
    _started.clear()
    for run_dir in _run_dirs:
        shutil.rmtree(run_dir, ignore_errors=True)
    _run_dirs.clear()
