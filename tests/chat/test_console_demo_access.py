"""`kb_setup_demo_access`: demo users with random passwords, and the demo page's widget key."""

from __future__ import annotations

import io
import re
import stat
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client

from chat.models import ApiKey
from chat.services import demo_access
from knowledge.services import knowledge_base_create

pytestmark = pytest.mark.django_db


def _run(key_file: Path, *args: str) -> str:
    out = io.StringIO()
    call_command("kb_setup_demo_access", "--key-file", str(key_file), *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


@pytest.fixture
def key_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "demo_widget_key"
    monkeypatch.setattr(demo_access, "DEMO_KEY_FILE", path)
    knowledge_base_create(slug="demo")
    return path


def test_creates_one_user_per_role_with_a_random_password_printed_once(key_file: Path) -> None:
    first = _run(key_file, "--origin", "http://127.0.0.1:8000")
    passwords = dict(re.findall(r"demo user\s+(\S+).*password: (\S+)", first))
    assert set(passwords) == {"demo-agent", "demo-manager", "demo-admin"}
    assert len(set(passwords.values())) == 3 and all(len(p) >= 16 for p in passwords.values())
    for username, password in passwords.items():
        assert User.objects.get(username=username).check_password(password)
    assert User.objects.get(username="demo-admin").is_superuser
    agent = User.objects.get(username="demo-agent")
    manager = User.objects.get(username="demo-manager")
    assert agent.has_perm("knowledge.view_faqentry") and not agent.has_perm("knowledge.change_faqentry")
    assert manager.has_perm("knowledge.change_faqentry") and manager.has_perm("knowledge.add_faqentry")

    again = _run(key_file, "--origin", "http://127.0.0.1:8000")
    assert "password:" not in again and "kept" in again
    assert User.objects.filter(username__startswith="demo-").count() == 3
    for username, password in passwords.items():  # a second run changes nothing
        assert User.objects.get(username=username).check_password(password)


def test_widget_key_is_kept_in_a_private_file_and_reused(key_file: Path) -> None:
    _run(key_file, "--origin", "http://127.0.0.1:8000", "--origin", "http://localhost:8000")
    raw = key_file.read_text().strip()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = ApiKey.objects.get(key_hash=ApiKey.digest(raw))
    assert (key.kind, key.kb.slug, sorted(key.scopes)) == ("publishable", "demo", ["ask", "feedback"])  # type: ignore[union-attr]
    assert key.allowed_origins == ["http://127.0.0.1:8000", "http://localhost:8000"]

    _run(key_file, "--origin", "http://127.0.0.1:8000", "--origin", "http://localhost:8000")
    assert key_file.read_text().strip() == raw
    assert ApiKey.objects.filter(revoked_at__isnull=True).count() == 1


def test_a_lost_key_file_makes_a_new_key_and_new_origins_are_added_to_the_same_key(key_file: Path) -> None:
    _run(key_file, "--origin", "http://127.0.0.1:8000")
    first = key_file.read_text().strip()
    key_file.unlink()
    _run(key_file, "--origin", "http://127.0.0.1:8000")
    second = key_file.read_text().strip()
    assert first != second
    _run(key_file, "--origin", "http://127.0.0.1:9000")
    assert key_file.read_text().strip() == second  # the page that shows it keeps working
    active = ApiKey.objects.filter(revoked_at__isnull=True)
    assert [key.key_hash for key in active] == [ApiKey.digest(second)]
    assert active.get().allowed_origins == ["http://127.0.0.1:8000", "http://127.0.0.1:9000"]


def test_reset_passwords_leaves_the_widget_key_of_a_stack_on_another_port_alone(
    key_file: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """GIVEN `make up` serving on KB_PORT=8123 (its key allows that port) WHEN the README's
    `kb_setup_demo_access --reset-passwords` runs in a shell without KB_PORT THEN the passwords change and
    the key, its file and its origins stay as they were."""
    monkeypatch.setenv("KB_PORT", "8123")
    _run(key_file)
    raw = key_file.read_text().strip()
    monkeypatch.delenv("KB_PORT")
    out = _run(key_file, "--reset-passwords")
    assert len(re.findall(r"password: \S+", out)) == 3 and "widget key untouched" in out
    assert key_file.read_text().strip() == raw
    key = ApiKey.objects.get(revoked_at__isnull=True)
    assert key.key_hash == ApiKey.digest(raw)
    assert key.allowed_origins == ["http://127.0.0.1:8123", "http://localhost:8123"]


def test_default_origins_follow_kb_host_and_port(key_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KB_HOST", "0.0.0.0")
    monkeypatch.setenv("KB_PORT", "8123")
    _run(key_file)
    key = ApiKey.objects.get(revoked_at__isnull=True)
    assert key.allowed_origins == ["http://127.0.0.1:8123", "http://localhost:8123"]


def test_the_demo_page_embeds_the_recorded_key(key_file: Path, client: Client) -> None:
    without = client.get("/demo/").content.decode()
    assert "kb_setup_demo_access" in without and "/widget.js" not in without
    _run(key_file, "--origin", "http://testserver")
    raw = key_file.read_text().strip()
    page = client.get("/demo/").content.decode()
    # The tag also carries the page's CSP nonce, which the widget passes on to its <style>.
    assert f'<script src="/widget.js" data-kb="demo" data-key="{raw}" nonce="' in page


def test_a_revoked_demo_key_is_not_served(key_file: Path, client: Client) -> None:
    _run(key_file, "--origin", "http://testserver")
    ApiKey.objects.update(revoked_at="2020-01-01T00:00:00Z")
    assert "data-key=" not in client.get("/demo/").content.decode()


def test_refuses_without_the_demo_knowledge_base(tmp_path: Path) -> None:
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="kb_load_demo"):
        _run(tmp_path / "key")
