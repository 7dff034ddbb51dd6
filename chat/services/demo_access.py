"""Demo access for a local `make up`: one user per role and a publishable widget key for ``demo``.

Why the raw widget key sits in a file: only key hashes are in the database, yet the demo page must
print the key into its ``<script>`` tag. A publishable key is public by design (it can only ask and
give feedback, only from its allowed origins, under the widget rate limit) and is visible in the
page's HTML anyway, so keeping it in a git-ignored file under var/ (mode 0600) reveals nothing new.
When the file is missing or names a key the database does not know (a reset database, another
checkout), a fresh key is made and the old demo keys are revoked: their raw value is lost. New origins
(the stack now serves on another port) are added to the recorded key, never a reason to replace it:
a page already showing the key keeps working.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from django.contrib.auth.models import Group, Permission, User
from django.db import transaction

from chat.models import ApiKey
from chat.services.keys import api_key_create, api_key_revoke
from kbservice.embedded import VAR_DIR
from knowledge.models import KnowledgeBase

DEMO_KEY_FILE = VAR_DIR / "demo_widget_key"
DEMO_KEY_NAME = "demo widget (kb_setup_demo_access)"
# role (group name, as kbservice.api.auth.ROLE_SCOPES knows it) -> demo username
DEMO_USERS = {"agent": "demo-agent", "knowledge manager": "demo-manager", "admin": "demo-admin"}
LOOPBACK = {"127.0.0.1", "localhost", "0.0.0.0", "::1", "[::1]"}


@dataclass(frozen=True)
class DemoUser:
    username: str
    role: str
    password: str | None  # set only when this call created the user (or reset its password)


def demo_groups_ensure() -> dict[str, Group]:
    """The three role groups with their admin permissions.

    Agents may look FAQ entries up in the admin but not change them; knowledge managers get every
    permission of the knowledge app; admins are superusers, so their group needs none."""
    groups = {name: Group.objects.get_or_create(name=name)[0] for name in DEMO_USERS}
    knowledge = Permission.objects.filter(content_type__app_label="knowledge")
    groups["agent"].permissions.set(knowledge.filter(codename__startswith="view_"))
    groups["knowledge manager"].permissions.set(knowledge)
    return groups


@transaction.atomic
def demo_users_ensure(*, reset_passwords: bool = False) -> list[DemoUser]:
    groups = demo_groups_ensure()
    users = []
    for role, username in DEMO_USERS.items():
        user = User.objects.filter(username=username).first()
        password = None
        if user is None or reset_passwords:
            # Random every time, never a default: a demo stack may well be reachable by others.
            password = secrets.token_urlsafe(12)
            user = user or User(username=username)
            user.set_password(password)
        user.is_staff = True  # the admin back office; what they may do there comes from their group
        user.is_superuser = role == "admin"
        user.save()
        user.groups.add(groups[role])
        users.append(DemoUser(username=username, role=role, password=password))
    return users


def demo_origins(*, host: str, port: int) -> list[str]:
    """The origins a browser reports for pages served at host:port (loopback names are interchangeable)."""
    hosts = ["127.0.0.1", "localhost"] if host in LOOPBACK else [host]
    return [f"http://{name}:{port}" for name in hosts]


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        return ""


def _write_private(path: Path, content: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(content + "\n")
    partial.replace(path)  # atomic: the demo page never reads half a key


def _active_key(raw: str, kb: KnowledgeBase) -> ApiKey | None:
    if not raw:
        return None
    return ApiKey.objects.filter(key_hash=ApiKey.digest(raw), kb=kb, revoked_at__isnull=True,
                                 kind=ApiKey.Kind.PUBLISHABLE).first()


@transaction.atomic
def demo_widget_key_ensure(*, kb: KnowledgeBase, origins: Sequence[str],
                           key_file: Path | None = None) -> tuple[ApiKey, str, bool]:
    """The demo page's publishable key: (key, raw key, created now), allowed from at least ``origins``."""
    path = key_file or DEMO_KEY_FILE
    raw = _read(path)
    key = _active_key(raw, kb)
    if key is not None:
        missing = [origin for origin in dict.fromkeys(origins) if origin not in key.allowed_origins]
        if missing:
            key.allowed_origins = [*key.allowed_origins, *missing]
            key.save(update_fields=["allowed_origins"])
        return key, raw, False
    # The recorded key is gone; older demo keys cannot be shown again either.
    for old in ApiKey.objects.filter(kb=kb, name=DEMO_KEY_NAME, revoked_at__isnull=True):
        api_key_revoke(key=old)
    key, raw = api_key_create(name=DEMO_KEY_NAME, kind=ApiKey.Kind.PUBLISHABLE, kb=kb,
                              allowed_origins=list(dict.fromkeys(origins)))
    _write_private(path, raw)
    return key, raw, True


def demo_widget_key_read(*, kb_slugs: Iterable[str] = ("demo",), key_file: Path | None = None) -> str | None:
    """The raw demo key if it is still an active publishable key of the demo knowledge base."""
    raw = _read(key_file or DEMO_KEY_FILE)
    if not raw:
        return None
    key = ApiKey.objects.filter(key_hash=ApiKey.digest(raw), revoked_at__isnull=True, kb__slug__in=list(kb_slugs),
                                kind=ApiKey.Kind.PUBLISHABLE).first()
    return raw if key is not None else None
