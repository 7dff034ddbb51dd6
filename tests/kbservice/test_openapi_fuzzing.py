"""The OpenAPI schema tells the truth: schemathesis fuzzes every operation of /api/schema/ against
the live server (real Postgres, Redis and rerank worker) with a key holding every scope.

Each response must not be a 5xx, must have a status the operation documents, must match the
documented body for that status (errors included), and must come back within MAX_RESPONSE_SECONDS.
``KB_FUZZ_EXAMPLES`` raises the number of generated cases per operation for a longer run, e.g.
``KB_FUZZ_EXAMPLES=50 .venv/bin/python -m pytest tests/kbservice/test_openapi_fuzzing.py``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import schemathesis
from django.conf import settings
from django.test import Client, override_settings
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from pytest_django.live_server_helper import LiveServer
from reversion.models import Version
from schemathesis import GenerationMode

from chat.models import ApiKey, Scope
from chat.services.ask import AskParams, ask
from chat.services.keys import api_key_create
from tests.chat.conftest import make_kb
from tests.conftest import WorkerProcess

pytestmark = [pytest.mark.worker, pytest.mark.django_db]

# The suite's run: a few generated cases per operation. KB_FUZZ_EXAMPLES asks for a longer run, which
# adds schemathesis' coverage phase (boundary values: the longest texts, the most documents), minutes
# of work for the CPU reranker.
LONG_RUN = "KB_FUZZ_EXAMPLES" in os.environ
FUZZ_EXAMPLES = int(os.environ.get("KB_FUZZ_EXAMPLES", "15"))
# No request may outlive the rerank deadlines (past them, asks degrade, rerank calls get 503) by more
# than a margin.
MAX_RESPONSE_SECONDS = max(settings.KB_RERANK_TIMEOUT, settings.KB_RERANK_API_TIMEOUT) + 5
CHECKS = ["not_a_server_error", "status_code_conformance", "response_schema_conformance"]


@dataclass(frozen=True)
class FuzzTarget:
    base_url: str
    headers: dict[str, str]
    # Real objects for the ids and names a request carries, in its path or in its JSON body.
    path: dict[str, Any]
    body: dict[str, Any]


def _served_schema() -> dict[str, Any]:
    """What /api/schema/ serves, fetched once at collection so each operation is its own test."""
    response = Client().get("/api/schema/", {"format": "json"})
    assert response.status_code == 200, response.content[:300]
    schema: dict[str, Any] = response.json()
    return schema


schema = schemathesis.openapi.from_dict(_served_schema(), config=schemathesis.Config.from_dict({
    "checks": {"enabled": False, **{name: {"enabled": True} for name in CHECKS},
               "max_response_time": MAX_RESPONSE_SECONDS},
    "phases": {"coverage": {"enabled": LONG_RUN}},
}))


@pytest.fixture(scope="module")
def fuzz_target(module_live_server: LiveServer, rerank_worker: WorkerProcess) -> Iterator[FuzzTarget]:
    """GIVEN the shop knowledge base with its entries, an answered ticket on it, and a secret key for
    every knowledge base with every scope (one key sends every request: no throttling)."""
    with override_settings(KB_THROTTLE_RATE="1000000/min"):
        shop = make_kb("shop")
        answered = ask(kb=shop, params=AskParams(question="退款多久到账"))
        _, raw = api_key_create(name="fuzzer", kind=ApiKey.Kind.SECRET, kb=None, scopes=list(Scope.values))
        entry = shop.entries.order_by("pk").first()
        assert entry is not None
        revision = Version.objects.get_for_object(entry).get().revision_id
        yield FuzzTarget(
            base_url=module_live_server.url, headers={"Authorization": f"Bearer {raw}"},
            path={"slug": shop.slug, "entry_id": entry.pk, "public_id": answered["ticket"]},
            body={"kb": shop.slug, "ticket": answered["ticket"], "question_id": answered["question_id"],
                  "revision_id": revision, "chosen_entry": entry.pk},
        )


@schema.parametrize()
@hypothesis_settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_operation_answers_as_its_schema_says(case: schemathesis.Case, fuzz_target: FuzzTarget) -> None:
    # Ids and names point at the real objects, so requests get past the 404 into validation and
    # the services (unknown ids are the authorisation matrix's business). Only in valid requests:
    # an invalid one keeps whatever made it invalid.
    if case.meta is None or case.meta.generation.mode == GenerationMode.POSITIVE:
        if case.path_parameters:
            case.path_parameters = {name: fuzz_target.path.get(name, value)
                                    for name, value in case.path_parameters.items()}
        if isinstance(case.body, dict):
            case.body = {name: fuzz_target.body.get(name, value) for name, value in case.body.items()}
    case.call_and_validate(base_url=fuzz_target.base_url, headers=fuzz_target.headers,
                           timeout=MAX_RESPONSE_SECONDS * 2)
