"""Security headers over real HTTP, per page type: a strict Content-Security-Policy on our own pages,
a looser one (styles only) on the admin and the API docs, and no page that can be framed."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.test import Client

from chat.models import ApiKey
from chat.services import demo_access
from chat.services.keys import api_key_create
from knowledge.services import faq_entry_create, knowledge_base_create

pytestmark = pytest.mark.django_db(transaction=True)

# Pages built from our own templates: scripts and styles only from our origin, nothing inline.
OWN_PAGES = ["/demo/", "/console/", "/console/workbench/", "/console/insights/", "/console/insights/queue/",
             "/console/insights/entries/"]
# Third-party templates (Django admin, django-import-export, reversion-compare, Swagger UI).
THIRD_PARTY_PAGES = ["/admin/", "/admin/knowledge/faqentry/", "/admin/knowledge/faqentry/import/",
                     "/admin/knowledge/faqentry/export/", "/api/docs/"]


def policy(response: httpx.Response) -> dict[str, list[str]]:
    header = response.headers["Content-Security-Policy"]
    return {name: values for name, *values in (part.split() for part in header.split(";") if part.strip())}


class PageAssets(HTMLParser):
    """What a page loads and what it has inline."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.script_nonces: list[str] = []
        self.inline_scripts = 0
        self.inline_styles = 0
        self.handlers: list[str] = []
        self.style_attributes = 0
        self._in_inline_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        self.handlers += [name for name, _ in attrs if name.startswith("on")]
        self.style_attributes += "style" in values
        if tag == "script":
            if values.get("src"):
                self.urls.append(values["src"] or "")
                self.script_nonces.append(values.get("nonce") or "")
            else:  # json_script data blocks are never run, so CSP does not govern them
                self._in_inline_script = values.get("type") != "application/json"
        elif tag == "link" and values.get("rel") in ("stylesheet", "icon"):
            self.urls.append(values.get("href") or "")
        elif tag == "style":
            self.inline_styles += 1

    def handle_endtag(self, tag: str) -> None:
        self._in_inline_script = self._in_inline_script and tag != "script"

    def handle_data(self, data: str) -> None:
        if self._in_inline_script and data.strip():
            self.inline_scripts += 1


def assets(html: str) -> PageAssets:
    parser = PageAssets()
    parser.feed(html)
    return parser


@pytest.fixture
def admin_http(live_server: Any, staff_user: Callable[..., User]) -> Iterator[httpx.Client]:
    """An HTTP client signed in as an admin, with a little data so list pages have rows."""
    kb = knowledge_base_create(slug="shop", name="Shop")
    faq_entry_create(kb=kb, data={"question": "How do I reset my password?", "answer": "Use the link."})
    session = Client()
    session.force_login(staff_user("admin"))
    cookies = {settings.SESSION_COOKIE_NAME: session.cookies[settings.SESSION_COOKIE_NAME].value}
    with httpx.Client(base_url=live_server.url, cookies=cookies, timeout=30) as client:
        yield client


def assert_common_headers(response: httpx.Response) -> None:
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "same-origin"
    assert response.headers["Cross-Origin-Opener-Policy"] == "same-origin"
    directives = policy(response)
    assert directives["default-src"] == ["'self'"]
    assert directives["frame-ancestors"] == ["'none'"]
    assert directives["object-src"] == ["'none'"]
    scripts = directives["script-src"]
    assert "'self'" in scripts
    assert not {"'unsafe-inline'", "'unsafe-eval'", "*", "https:", "http:", "data:"} & set(scripts), scripts
    # HSTS only behind TLS in production (tests/kbservice/test_deployment.py): never on plain HTTP.
    assert "Strict-Transport-Security" not in response.headers


def check_strict_page(client: httpx.Client, response: httpx.Response) -> None:
    assert response.status_code == 200, response.text[:500]
    assert_common_headers(response)
    directives = policy(response)
    assert "'unsafe-inline'" not in directives["style-src"]
    page = assets(response.text)
    assert (page.inline_scripts, page.inline_styles, page.handlers, page.style_attributes) == (0, 0, [], 0)
    assert page.urls, "every page loads at least its stylesheet"
    for url in page.urls:
        assert urlsplit(urljoin(str(response.url), url)).netloc == urlsplit(str(response.url)).netloc, url
        assert client.get(url).status_code == 200, url


@pytest.mark.parametrize("path", OWN_PAGES)
def test_our_pages_have_a_strict_policy_and_nothing_inline(admin_http: httpx.Client, path: str) -> None:
    response = admin_http.get(path)
    check_strict_page(admin_http, response)


def test_the_login_page_has_the_strict_policy_too(live_server: Any) -> None:
    with httpx.Client(base_url=live_server.url, timeout=30) as anonymous:
        check_strict_page(anonymous, anonymous.get("/console/login/"))


def test_demo_page_hands_the_widget_the_nonce_its_policy_allows(
    admin_http: httpx.Client, live_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    demo = knowledge_base_create(slug="demo", name="Demo")
    _, raw = api_key_create(name="demo widget", kind=ApiKey.Kind.PUBLISHABLE, kb=demo,
                            allowed_origins=[live_server.url])
    (tmp_path / "demo_widget_key").write_text(raw)
    monkeypatch.setattr(demo_access, "DEMO_KEY_FILE", tmp_path / "demo_widget_key")
    first, second = admin_http.get("/demo/"), admin_http.get("/demo/")
    [nonce] = assets(first.text).script_nonces
    assert nonce and f"'nonce-{nonce}'" in policy(first)["style-src"]
    assert f"'nonce-{nonce}'" in policy(first)["script-src"]
    assert assets(second.text).script_nonces != [nonce], "a nonce is fresh for every response"


@pytest.mark.parametrize("path", THIRD_PARTY_PAGES)
def test_admin_and_api_docs_loosen_styles_only_and_load_nothing_from_elsewhere(
    admin_http: httpx.Client, path: str,
) -> None:
    response = admin_http.get(path)
    assert response.status_code == 200, response.text[:500]
    assert_common_headers(response)
    directives = policy(response)
    assert directives["style-src"] == ["'self'", "'unsafe-inline'"]
    page = assets(response.text)
    assert page.inline_scripts == 0
    for url in page.urls:
        assert urlsplit(urljoin(str(response.url), url)).netloc == urlsplit(str(response.url)).netloc, url
        assert admin_http.get(url).status_code == 200, url


def test_swagger_ui_comes_from_the_sidecar_and_its_start_up_script_is_a_file(admin_http: httpx.Client) -> None:
    page = assets(admin_http.get("/api/docs/").text)
    assert any("/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in url for url in page.urls)
    start_up = next(url for url in page.urls if url.startswith("/api/docs/"))
    script = admin_http.get(start_up)
    assert script.headers["Content-Type"].startswith("application/javascript")
    assert "SwaggerUIBundle" in script.text and "/api/schema/" in script.text


def test_json_and_the_widget_script_are_not_frameable_and_not_sniffed(admin_http: httpx.Client) -> None:
    for path in ("/api/v1/kbs", "/widget.js"):
        response = admin_http.get(path)
        assert response.status_code == 200, path
        assert_common_headers(response)
    # The probes answer ahead of most middleware (kbservice.health); JSON and text, never framed.
    for path in ("/healthz", "/metrics"):
        response = admin_http.get(path)
        assert response.status_code == 200, path
        assert (response.headers["X-Frame-Options"], response.headers["X-Content-Type-Options"],
                response.headers["Referrer-Policy"]) == ("DENY", "nosniff", "same-origin"), path
    widget = admin_http.get("/widget.js")
    assert widget.headers["Content-Type"].startswith("text/javascript")
    # Shadow DOM on the host page, no frame of ours: nothing needs a frame-ancestors exemption.
    assert "attachShadow" in widget.text and "iframe" not in widget.text.lower()

