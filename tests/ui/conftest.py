"""Browser tests: the system Chromium, headless, driven by pytest-playwright against ``live_server``.

Playwright's own browser download is not used (and cannot work offline): the Debian ``chromium``
package that scripts/bootstrap.sh installs is launched instead. Screenshots at 1280×800 go to
test-artifacts/screenshots/ (git-ignored) for a person to look at.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page, expect

from chat.services import demo_access
from kbservice.embedded import BASE_DIR
from knowledge.management.commands.kb_load_demo import DEMO_FILE
from knowledge.models import KnowledgeBase
from knowledge.services import faq_entries_embed, faq_entry_create, knowledge_base_create
from rerank.batching import RerankRequest
from rerank.services import rerank_score
from tests.conftest import WorkerProcess

# Playwright's sync API keeps an asyncio loop in this thread, and Django refuses ORM calls from a
# thread with a running loop. These tests touch the ORM only between browser steps, never
# concurrently with it, so the check is switched off for the test process.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
# The first answer of a test waits for recall, the rerank worker and highlighting on a 2-core machine.
expect.set_options(timeout=20_000)

CHROMIUM = os.environ.get("KB_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SCREENSHOTS = BASE_DIR / "test-artifacts" / "screenshots"
VIEWPORT = {"width": 1280, "height": 800}
# Entries of the bundled demo knowledge base the browser tests ask about: embedding all of it takes
# ~25 s on a CPU, and the database is emptied after every test.
UI_DEMO_ENTRIES = {
    "demo-zh-001", "demo-zh-002", "demo-zh-003", "demo-zh-004", "demo-zh-014", "demo-zh-015", "demo-zh-023",
    "demo-zh-028", "demo-zh-029", "demo-zh-036", "demo-en-004", "demo-en-007", "demo-en-019",
}


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict[str, Any]) -> dict[str, Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: scripts/bootstrap.sh installs Debian's chromium (or set KB_TEST_CHROMIUM)")
    return {**browser_type_launch_args, "executable_path": CHROMIUM, "headless": True, "args": CHROMIUM_ARGS}


@pytest.fixture
def new_page(browser: Browser) -> Iterator[Callable[..., Page]]:
    """Pages in fresh contexts (own cookies), 1280×800, in the given browser language. A test fails
    if the browser refused anything under the Content-Security-Policy: a blocked script or style is
    a broken page, even where the test's own steps did not notice."""
    contexts: list[BrowserContext] = []
    violations: list[str] = []

    def record(message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text:
            violations.append(f"{message.page.url if message.page else ''}: {message.text}")

    def make(*, locale: str = "en-US", user: User | None = None, base_url: str = "") -> Page:
        context = browser.new_context(viewport=VIEWPORT, locale=locale, accept_downloads=True)  # type: ignore[arg-type]
        context.set_default_timeout(20_000)
        context.on("console", record)
        contexts.append(context)
        if user is not None:
            sign_in(context, user, base_url)
        return context.new_page()

    yield make
    for context in contexts:
        context.close()
    assert violations == [], "\n".join(violations)


def sign_in(context: BrowserContext, user: User, base_url: str) -> None:
    """A signed-in session without typing a password (the login form has its own test)."""
    client = Client()
    client.force_login(user)
    cookie = client.cookies[settings.SESSION_COOKIE_NAME].value
    context.add_cookies([{"name": settings.SESSION_COOKIE_NAME, "value": cookie, "url": base_url}])


@pytest.fixture
def shot() -> Callable[[Page, str], Path]:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def take(page: Page, name: str, *, full_page: bool = False) -> Path:
        path = SCREENSHOTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=full_page)
        return path

    return take


@pytest.fixture(autouse=True)
def _patient_rerank(settings: Any) -> None:
    # These tests check pages, not latency: on a busy 2-core machine the embedded reranker can need
    # more than the default 5 s for a knowledge base's first uncached candidates, and a degraded
    # answer would change what the pages show. (Degraded answers have their own tests in tests/chat.)
    settings.KB_RERANK_TIMEOUT = 60.0


@pytest.fixture(scope="session")
def warm_rerank_worker(rerank_worker: WorkerProcess) -> WorkerProcess:
    """One rerank before the tests: the worker loads its engine on the first task, which can take
    longer than the ask path waits (KB_RERANK_TIMEOUT), and the first answer would come back degraded."""
    outcome = rerank_score(requests=[RerankRequest(query="warm up", documents=["warm up the engine"])], timeout=120)
    assert outcome.status == "ok", outcome.reason
    return rerank_worker


@pytest.fixture
def demo_kb(transactional_db: None, warm_rerank_worker: WorkerProcess) -> KnowledgeBase:
    kb = knowledge_base_create(slug="demo", name="Demo support desk", languages=("zh", "en"))
    rows = [json.loads(line) for line in DEMO_FILE.read_text(encoding="utf-8").splitlines() if line.strip()]
    ids = [faq_entry_create(kb=kb, data=row).pk for row in rows if row["external_id"] in UI_DEMO_ENTRIES]
    faq_entries_embed(entry_ids=ids)
    return kb


@pytest.fixture
def widget_key(demo_kb: KnowledgeBase, live_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The demo page's key, made by kb_setup_demo_access for the live server's origin."""
    monkeypatch.setattr(demo_access, "DEMO_KEY_FILE", tmp_path / "demo_widget_key")
    call_command("kb_setup_demo_access", "--origin", live_server.url, stdout=io.StringIO(), stderr=io.StringIO())
    return (tmp_path / "demo_widget_key").read_text().strip()


def wait_for_answers(count: int = 1) -> None:
    """Until ``count`` questions are answered and recorded on the server (an answer is written with its
    question, in one statement). The first answers of a session can take up to the rerank deadline on a
    busy machine; the page is then judged with the usual expect() timeout, not one guessed for the ask."""
    from django.conf import settings as django_settings

    from chat.models import Question
    from tests.helpers import wait_until

    wait_until(lambda: Question.objects.filter(state=Question.State.ANSWERED).count() >= count,
               timeout=3 * django_settings.KB_RERANK_TIMEOUT + 60)
