from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.core.management import call_command
from pytest_django.live_server_helper import LiveServer
from schemathesis.pytest.plugin import SchemathesisFunction


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Give each operation schemathesis generates its own node id ("test[POST /api/v1/ask]"): under
    pytest 9 they all get the test function's, and pytest-xdist, which schedules tests by node id,
    would run one of them."""
    for item in items:
        if isinstance(item, SchemathesisFunction) and item.operation_label and item._id.params is None:
            item._id = item._id.with_params(item.operation_label)


@pytest.fixture(scope="module")
def module_live_server(django_db_setup: None, django_db_blocker: Any) -> Iterator[LiveServer]:
    """A live server for one module whose data are set up once, committed, and flushed when the
    module is done (pytest-django's live_server flushes the database after every test).

    Tests using it are marked ``django_db``: that makes pytest-django create the test database; the
    module's data live outside the test's transaction, where the server's connection sees them."""
    with django_db_blocker.unblock():
        server = LiveServer("localhost")
        server._live_server_modified_settings.enable()
        try:
            yield server
        finally:
            server._live_server_modified_settings.disable()
            server.stop()
            call_command("flush", interactive=False, verbosity=0)
