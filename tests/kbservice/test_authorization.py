"""Who may do what, over real HTTP: every API operation and console page for every kind of caller.

The tables below are the documentation (README, "Who may call what"): one row per operation, one
column per caller, each cell the status that caller gets. Success codes are the operation's own
(200, 201, 202); 401 = no or bad credentials, 403 = the caller lacks the scope or role, 404 = the
object belongs to a knowledge base the key is not bound to (answered exactly as a missing one).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.test import Client as DjangoClient
from django.utils import timezone
from django.utils.crypto import get_random_string
from pytest_django.live_server_helper import LiveServer
from reversion.models import Version

from chat.models import ApiKey, Decision, Feedback, Message, Question, Scope, Ticket, WorkbenchRun
from chat.services.demo_access import demo_groups_ensure
from chat.services.keys import api_key_create, api_key_revoke
from knowledge.models import FaqEntry, KnowledgeBase
from knowledge.services import faq_entry_create
from tests.chat.conftest import make_kb
from tests.conftest import WorkerProcess

pytestmark = [pytest.mark.worker, pytest.mark.django_db]

# Callers: anon = no credentials; wid = the publishable widget key of acme; ask, tix (tickets),
# fb (feedback), kw (knowledge:write), rr (rerank), an (analytics) = a secret key of acme with that one
# scope; oth = a secret key of globex with every scope; rev = a revoked secret key of acme with every
# scope; agt, mgr, adm = staff signed in through the console login as agent, knowledge manager, admin.
CALLERS = ["anon", "wid", "ask", "tix", "fb", "kw", "rr", "an", "oth", "rev", "agt", "mgr", "adm"]

API_MATRIX = """
operation                                            anon  wid  ask  tix   fb   kw   rr   an  oth  rev  agt  mgr  adm
POST   /api/v1/ask                                    401  200  200  403  403  403  403  403  404  401  200  200  200
POST   /api/v1/tickets                                401  202  202  403  403  403  403  403  404  401  202  202  202
GET    /api/v1/tickets                                401  403  403  200  403  403  403  403  200  401  200  200  200
GET    /api/v1/tickets/{ticket}                       401  200  200  403  403  403  403  403  404  401  200  200  200
POST   /api/v1/tickets/{ticket}/questions             401  202  202  403  403  403  403  403  404  401  202  202  202
POST   /api/v1/tickets/{ticket}/handoff               401  200  200  403  403  403  403  403  404  401  200  200  200
GET    /api/v1/tickets/{ticket}/messages              401  200  200  403  403  403  403  403  404  401  200  200  200
POST   /api/v1/tickets/{ticket}/messages              401  201  201  403  403  403  403  403  404  401  201  201  201
POST   /api/v1/tickets/{ticket}/replies               401  403  403  201  403  403  403  403  404  401  201  201  201
POST   /api/v1/feedback                               401  201  403  403  201  403  403  403  404  401  201  201  201
POST   /api/v1/tickets/{ticket}/resolve               401  403  403  200  403  403  403  403  404  401  200  200  200
GET    /api/v1/kbs                                    401  403  403  403  403  200  403  403  200  401  403  200  200
POST   /api/v1/kbs                                    401  403  403  403  403  403  403  403  403  401  403  201  201
GET    /api/v1/kbs/{kb}                               401  403  403  403  403  200  403  403  404  401  403  200  200
PATCH  /api/v1/kbs/{kb}                               401  403  403  403  403  200  403  403  404  401  403  200  200
GET    /api/v1/kbs/{kb}/stats                         401  403  403  403  403  200  403  403  404  401  403  200  200
GET    /api/v1/kbs/{kb}/entries                       401  403  403  403  403  200  403  403  404  401  403  200  200
POST   /api/v1/kbs/{kb}/entries                       401  403  403  403  403  201  403  403  404  401  403  201  201
GET    /api/v1/kbs/{kb}/entries/{entry}               401  403  403  403  403  200  403  403  404  401  403  200  200
GET    /api/v1/kbs/{kb}/entries/{entry}/revisions     401  403  403  403  403  200  403  403  404  401  403  200  200
PATCH  /api/v1/kbs/{kb}/entries/{entry}               401  403  403  403  403  200  403  403  404  401  403  200  200
POST   /api/v1/kbs/{kb}/entries/{entry}/rollback      401  403  403  403  403  200  403  403  404  401  403  200  200
DELETE /api/v1/kbs/{kb}/entries/{entry}               401  403  403  403  403  200  403  403  404  401  403  200  200
POST   /v1/rerank                                     401  403  403  403  403  403  200  403  200  401  200  200  200
POST   /v1/rerank/batch                               401  403  403  403  403  403  200  403  200  401  200  200  200
POST   /v2/rerank                                     401  403  403  403  403  403  200  403  200  401  200  200  200
POST   /api/v1/rerank                                 401  403  403  403  403  403  200  403  200  401  200  200  200
POST   /api/v1/rerank/batch                           401  403  403  403  403  403  200  403  200  401  200  200  200
GET    /api/schema/?format=json                       200  200  200  200  200  200  200  200  200  401  200  200  200
GET    /healthz                                       200  200  200  200  200  200  200  200  200  200  200  200  200
GET    /metrics                                       200  200  200  200  200  200  200  200  200  200  200  200  200
"""

# Pages are for signed-in staff only: an API key, even one with every scope, opens none of them
# (key = a secret key of acme with every scope, sent as on the API; none = staff without a role).
PAGE_CALLERS = ["anon", "key", "none", "agt", "mgr", "adm"]
PAGE_MATRIX = """
page                                          anon  key none  agt  mgr  adm
/console/                                      302  302  403  200  200  200
/console/tickets/{ticket}/                     302  302  403  200  200  200
/console/workbench/                            302  302  403  200  200  200
/console/workbench/runs/{run}/                 302  302  403  200  200  200
/console/workbench/runs/{run}.csv              302  302  403  200  200  200
/console/insights/                             302  302  403  403  200  200
/console/insights/queue/                       302  302  403  403  200  200
/console/insights/entries/                     302  302  403  403  200  200
/admin/                                        302  302  200  200  200  200
/admin/knowledge/faqentry/                     302  302  403  200  200  200
/admin/knowledge/faqentry/add/                 302  302  403  403  200  200
/admin/auth/user/                              302  302  403  403  403  200
/demo/                                         200  200  200  200  200  200
/widget.js                                     200  200  200  200  200  200
/api/docs/                                     200  200  200  200  200  200
"""

SUCCESS = {200, 201, 202}
STAFF_ROLES = {"agt": "agent", "mgr": "knowledge manager", "adm": "admin", "none": None}
ONE_SCOPE = {"ask": Scope.ASK, "tix": Scope.TICKETS, "fb": Scope.FEEDBACK, "kw": Scope.KNOWLEDGE_WRITE,
             "rr": Scope.RERANK, "an": Scope.ANALYTICS}


def parse(table: str) -> tuple[list[str], dict[str, dict[str, int]]]:
    """{row: {caller: status}} from a table whose first line names the callers."""
    header, *rows = [line.split() for line in table.strip().splitlines()]
    callers = header[1:]
    width = len(callers)
    return callers, {" ".join(cells[:-width]): dict(zip(callers, map(int, cells[-width:]), strict=True))
                     for cells in rows}


API_CALLERS, API_EXPECTED = parse(API_MATRIX)
PAGE_CALLERS_PARSED, PAGE_EXPECTED = parse(PAGE_MATRIX)
assert API_CALLERS == CALLERS and PAGE_CALLERS_PARSED == PAGE_CALLERS


@dataclass(frozen=True)
class Target:
    """One caller's own objects in acme, so what one caller changes never decides another's row."""

    entry: FaqEntry
    revision: int
    ticket: Ticket
    question: Question


@dataclass(frozen=True)
class World:
    acme: KnowledgeBase
    globex: KnowledgeBase
    targets: dict[str, Target]
    theirs: Target  # globex's
    run: WorkbenchRun
    credentials: dict[str, tuple[dict[str, str], dict[str, str]]]  # caller -> (headers, cookies)


def first_revision(entry: FaqEntry) -> int:
    return Version.objects.get_for_object(entry).get().revision_id


def target_in(kb: KnowledgeBase, name: str) -> Target:
    entry = faq_entry_create(kb=kb, data={"question": f"How do I reset my password ({name})?",
                                          "answer": "Use the reset link."})
    ticket = Ticket.objects.create(kb=kb, customer="Ada")
    question = ticket.questions.create(text="I forgot my password", normalized="i forgot my password",
                                       state=Question.State.ANSWERED, decision=Decision.HANDOFF,
                                       answered_at=timezone.now())
    return Target(entry=entry, revision=first_revision(entry), ticket=ticket, question=question)


def key_headers(kb: KnowledgeBase, scopes: list[str], *, kind: str = ApiKey.Kind.SECRET,
                revoked: bool = False) -> dict[str, str]:
    key, raw = api_key_create(name="matrix", kind=kind, kb=kb, scopes=scopes,
                              allowed_origins=["https://shop.example"] if kind == ApiKey.Kind.PUBLISHABLE else [])
    if revoked:
        api_key_revoke(key=key)
    return {"Authorization": f"Bearer {raw}", "Origin": "https://shop.example"}


def staff_session(role: str | None, username: str) -> dict[str, str]:
    """Cookies of a signed-in staff member (as the staff_user fixture makes them) with a CSRF token,
    which unsafe methods need besides the session."""
    user = User.objects.create_user(username, is_staff=True, is_superuser=role == "admin")
    if role:
        user.groups.add(demo_groups_ensure()[role])
    browser = DjangoClient()
    browser.force_login(user)
    return {settings.SESSION_COOKIE_NAME: browser.cookies[settings.SESSION_COOKIE_NAME].value,
            settings.CSRF_COOKIE_NAME: get_random_string(32)}


def credentials(caller: str, acme: KnowledgeBase, globex: KnowledgeBase) -> tuple[dict[str, str], dict[str, str]]:
    if caller in STAFF_ROLES:
        cookies = staff_session(STAFF_ROLES[caller], username=caller)
        return {"X-CSRFToken": cookies[settings.CSRF_COOKIE_NAME]}, cookies
    every_scope = list(Scope.values)
    if caller == "wid":
        return key_headers(acme, [], kind=ApiKey.Kind.PUBLISHABLE), {}
    if caller in ("oth", "rev", "key"):
        return key_headers(globex if caller == "oth" else acme, every_scope, revoked=caller == "rev"), {}
    return (key_headers(acme, [ONE_SCOPE[caller]]) if caller != "anon" else {}), {}


@pytest.fixture(scope="module")
def world(module_live_server: LiveServer, rerank_worker: WorkerProcess) -> World:
    """GIVEN acme and globex with entries and answered tickets, a workbench run, and every caller's
    credentials; set up once for the module (module_live_server flushes it at the end)."""
    acme = make_kb("acme", [{"question": "How do I reset my password?", "answer": "Use the reset link."}])
    globex = make_kb("globex", [{"question": "Where is my parcel?", "answer": "Track it online."}])
    callers = [*CALLERS, *PAGE_CALLERS]
    return World(
        acme=acme, globex=globex, targets={caller: target_in(acme, caller) for caller in callers},
        theirs=target_in(globex, "globex"),
        run=WorkbenchRun.objects.create(mode=WorkbenchRun.Mode.DOCUMENTS, query="q", status="ok",
                                        result={"rows": [], "stages": []}),
        credentials={caller: credentials(caller, acme, globex) for caller in dict.fromkeys(callers)},
    )


@pytest.fixture
def client_for(module_live_server: LiveServer, world: World) -> Iterator[Callable[[str], httpx.Client]]:
    clients: list[httpx.Client] = []

    def make(caller: str) -> httpx.Client:
        headers, cookies = world.credentials[caller]
        clients.append(httpx.Client(base_url=module_live_server.url, headers=headers, cookies=cookies, timeout=60))
        return clients[-1]

    yield make
    for client in clients:
        client.close()


def api_call(world: World, operation: str, caller: str) -> tuple[str, str, dict[str, Any] | None]:
    """Method, URL and body of one row of API_MATRIX, aimed at the caller's objects in acme."""
    method, template = operation.split()
    mine = world.targets[caller]
    url = template.format(kb=world.acme.slug, entry=mine.entry.pk, ticket=mine.ticket.public_id)
    question = {"kb": world.acme.slug, "question": "How do I reset my password?"}
    bodies: dict[str, dict[str, Any]] = {
        "POST /api/v1/ask": question,
        "POST /api/v1/tickets": question,
        "POST /api/v1/tickets/{ticket}/questions": {"question": "And on my phone?"},
        "POST /api/v1/tickets/{ticket}/messages": {"text": "Are you there?"},
        "POST /api/v1/tickets/{ticket}/replies": {"text": "Here I am.", "author": "Li"},
        "POST /api/v1/feedback": {"ticket": str(mine.ticket.public_id), "question_id": mine.question.pk,
                                  "helpful": True},
        "POST /api/v1/kbs": {"slug": f"new-{caller}"},
        "PATCH /api/v1/kbs/{kb}": {"top_n": 2},
        "POST /api/v1/kbs/{kb}/entries": {"question": "A new question?"},
        "PATCH /api/v1/kbs/{kb}/entries/{entry}": {"version": 1, "answer": "Changed."},
        "POST /api/v1/kbs/{kb}/entries/{entry}/rollback": {"revision_id": mine.revision},
    }
    if template.endswith("/batch"):
        bodies[operation] = {"queries": ["reset password"], "documents": [["Use the reset link.", "Track it."]]}
    elif template.endswith("/rerank"):
        bodies[operation] = {"query": "reset password", "documents": ["Use the reset link.", "Track it."]}
    return method, url, bodies.get(operation)


def assert_error_shape(response: httpx.Response) -> None:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}, body
    expected_code = {401: {"not_authenticated", "authentication_failed"}, 403: {"permission_denied"},
                     404: {"not_found"}}[response.status_code]
    assert body["error"]["code"] in expected_code, body
    if response.status_code == 401:
        assert response.headers["WWW-Authenticate"] == 'Bearer realm="kbservice"'


@pytest.mark.parametrize("caller", CALLERS)
def test_api_matrix(caller: str, world: World, client_for: Callable[[str], httpx.Client]) -> None:
    """WHEN the caller calls every operation on its objects in acme (rows in order, so the writes
    come after the reads), THEN each answers as the table says, every refusal in the one error
    shape, and refusals change nothing."""
    client = client_for(caller)
    mine = world.targets[caller]
    actual: dict[str, int] = {}
    for operation in API_EXPECTED:
        method, url, body = api_call(world, operation, caller)
        response = client.request(method, url, json=body)
        actual[operation] = response.status_code
        if response.status_code not in SUCCESS:
            assert_error_shape(response)
    assert actual == {operation: row[caller] for operation, row in API_EXPECTED.items()}

    def allowed(operation: str) -> bool:
        return API_EXPECTED[operation][caller] in SUCCESS

    entry = FaqEntry.objects.get(pk=mine.entry.pk)
    # Edited (version 2), rolled back (3) and archived (4), or untouched.
    assert (entry.version, entry.status) == ((4, "archived") if allowed("DELETE /api/v1/kbs/{kb}/entries/{entry}")
                                             else (1, "published"))
    assert KnowledgeBase.objects.filter(slug=f"new-{caller}").exists() == allowed("POST /api/v1/kbs")
    expected_status = (Ticket.Status.RESOLVED if allowed("POST /api/v1/tickets/{ticket}/resolve")
                       else Ticket.Status.HANDED_OFF if allowed("POST /api/v1/tickets/{ticket}/handoff")
                       else Ticket.Status.OPEN)
    assert Ticket.objects.get(pk=mine.ticket.pk).status == expected_status
    assert Feedback.objects.filter(question=mine.question).exists() == allowed("POST /api/v1/feedback")
    assert (Message.objects.filter(ticket=mine.ticket, kind=Message.Kind.CUSTOMER).exists()
            == allowed("POST /api/v1/tickets/{ticket}/messages"))
    assert (Message.objects.filter(ticket=mine.ticket, kind=Message.Kind.AGENT).exists()
            == allowed("POST /api/v1/tickets/{ticket}/replies"))
    assert mine.ticket.questions.count() == (2 if allowed("POST /api/v1/tickets/{ticket}/questions") else 1)
    assert not Feedback.objects.filter(question=world.theirs.question).exists()


@pytest.mark.parametrize("caller", PAGE_CALLERS)
def test_page_matrix(caller: str, world: World, client_for: Callable[[str], httpx.Client]) -> None:
    client = client_for(caller)
    actual = {}
    for page in PAGE_EXPECTED:
        response = client.get(page.format(ticket=world.targets[caller].ticket.public_id, run=world.run.pk))
        actual[page] = response.status_code
        if response.status_code == 302:  # to a login page, never to a page of the console itself
            assert response.headers["Location"].startswith(("/console/login/?next=", "/admin/login/?next="))
    assert actual == {page: row[caller] for page, row in PAGE_EXPECTED.items()}


def test_ids_of_another_knowledge_base_are_not_found(world: World, client_for: Callable[[str], httpx.Client]) -> None:
    """GIVEN a key of acme with every scope, WHEN it names globex's tickets, questions, entries,
    revisions and slug (in the path, or in a body next to acme's own objects), THEN each is 404 with
    the very body an id that does not exist gets, and globex is left as it was."""
    client = client_for("key")
    mine, theirs = world.targets["key"], world.theirs
    acme, entry, ticket, question = world.acme.slug, mine.entry.pk, mine.ticket.public_id, mine.question.pk

    def requests(*, ticket_id: object, question_id: int, entry_id: int, revision_id: int,
                 slug: str) -> list[tuple[str, str, dict[str, Any] | None]]:
        entry_url = f"/api/v1/kbs/{acme}/entries/{entry_id}"
        return [
            ("GET", f"/api/v1/tickets/{ticket_id}", None),
            ("POST", f"/api/v1/tickets/{ticket_id}/questions", {"question": "Hello?"}),
            ("POST", f"/api/v1/tickets/{ticket_id}/handoff", None),
            ("GET", f"/api/v1/tickets/{ticket_id}/messages", None),
            ("POST", f"/api/v1/tickets/{ticket_id}/messages", {"text": "Hello?"}),
            ("POST", f"/api/v1/tickets/{ticket_id}/replies", {"text": "Hello."}),
            ("POST", f"/api/v1/tickets/{ticket_id}/resolve", None),
            ("POST", "/api/v1/ask", {"kb": acme, "question": "Hello?", "ticket": str(ticket_id)}),
            ("POST", "/api/v1/feedback", {"ticket": str(ticket_id), "question_id": question, "helpful": True}),
            ("POST", "/api/v1/feedback", {"ticket": str(ticket), "question_id": question_id, "helpful": True}),
            ("GET", entry_url, None),
            ("PATCH", entry_url, {"version": 1, "answer": "Mine now."}),
            ("DELETE", entry_url, None),
            ("GET", f"{entry_url}/revisions", None),
            ("POST", f"{entry_url}/rollback", {"revision_id": mine.revision}),
            ("POST", f"/api/v1/kbs/{acme}/entries/{entry}/rollback", {"revision_id": revision_id}),
            ("GET", f"/api/v1/kbs/{slug}", None),
            ("GET", f"/api/v1/kbs/{slug}/entries", None),
            ("POST", "/api/v1/ask", {"kb": slug, "question": "Hello?"}),
            ("POST", "/api/v1/tickets", {"kb": slug, "question": "Hello?"}),
        ]

    named = requests(ticket_id=theirs.ticket.public_id, question_id=theirs.question.pk, entry_id=theirs.entry.pk,
                     revision_id=theirs.revision, slug=world.globex.slug)
    missing = requests(ticket_id=uuid.uuid4(), question_id=2**62, entry_id=2**62, revision_id=2**62,
                       slug="no-such-kb")
    for (method, url, body), unknown in zip(named, missing, strict=True):
        response, response_to_unknown = client.request(method, url, json=body), client.request(
            unknown[0], unknown[1], json=unknown[2])
        assert response.status_code == 404, (method, url, body, response.text)
        assert_error_shape(response)
        # Messages may echo the slug sent, never anything the caller did not send.
        assert response.text.replace(world.globex.slug, "no-such-kb") == response_to_unknown.text, (method, url)

    assert client.get("/api/v1/tickets", params={"kb": world.globex.slug}).json()["count"] == 0
    entry_now, ticket_now = FaqEntry.objects.get(pk=theirs.entry.pk), Ticket.objects.get(pk=theirs.ticket.pk)
    assert (entry_now.version, entry_now.status, ticket_now.status) == (1, "published", Ticket.Status.OPEN)
    assert theirs.question.feedback.count() == 0 and ticket_now.questions.count() == 1
