"""Starts the test suite's own Postgres (+pgvector) and Redis on free ports before Django loads
its settings, so `make test` needs nothing running and never touches the `make up` data."""

from __future__ import annotations

import os
from collections.abc import Generator
from typing import Any

import pytest

from kbservice.embedded import VAR_DIR, EmbeddedPostgres, EmbeddedRedis

_started: list[Any] = []


@pytest.hookimpl(hookwrapper=True)
def pytest_load_initial_conftests(early_config: pytest.Config, parser: Any, args: list[str]) -> Generator[None]:
    # xdist workers inherit the controller's environment, and with it its stack.
    if "KB_TEST_STACK" not in os.environ:
        postgres = EmbeddedPostgres.start(VAR_DIR / "test" / "pgdata")
        postgres.ensure_database("kbservice")
        redis = EmbeddedRedis.start(VAR_DIR / "test" / "redis", persist=False)
        _started.extend([redis, postgres])
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
