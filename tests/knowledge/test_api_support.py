"""Personas and helpers shared by the knowledge API tests (no tests here)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from django.contrib.auth.models import Group, User
from django.test import Client

from chat.models import ApiKey, Scope
from chat.services.keys import api_key_create
from knowledge.models import KnowledgeBase

if TYPE_CHECKING:  # the test client's response type exists only in django-stubs
    from django.test.client import _MonkeyPatchedWSGIResponse as TestResponse


def secret_key(kb: KnowledgeBase | None, scopes: tuple[str, ...] = (Scope.KNOWLEDGE_WRITE,)) -> dict[str, str]:
    _, raw = api_key_create(name="server", kind=ApiKey.Kind.SECRET, kb=kb, scopes=scopes)
    return {"Authorization": f"Bearer {raw}"}


def publishable_key(kb: KnowledgeBase) -> dict[str, str]:
    _, raw = api_key_create(name="widget", kind=ApiKey.Kind.PUBLISHABLE, kb=kb, allowed_origins=["*"])
    return {"X-Api-Key": raw, "Origin": "https://shop.example"}


def session(username: str, *, group: str | None = None, staff: bool = True, superuser: bool = False) -> Client:
    user = User.objects.create_user(username, password="x", is_staff=staff, is_superuser=superuser)
    if group:
        user.groups.add(Group.objects.get_or_create(name=group)[0])
    client = Client()
    client.force_login(user)
    return client


def call(client: Client, method: str, url: str, body: Any = None, headers: dict[str, str] | None = None,
         raw: bytes | str | None = None) -> TestResponse:
    """One JSON request; ``raw`` sends the body as given (bad JSON, huge bodies)."""
    data = raw if raw is not None else (json.dumps(body) if body is not None else None)
    kwargs: dict[str, Any] = {"headers": headers or {}}
    if data is not None:
        kwargs.update(data=data, content_type="application/json")
    response: TestResponse = getattr(client, method.lower())(url, **kwargs)
    return response


def error_of(response: TestResponse) -> dict[str, Any]:
    """The one error body; fails the test if the response is not in that shape."""
    assert response["Content-Type"].startswith("application/json"), response.content[:200]
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}, body
    error: dict[str, Any] = body["error"]
    return error
