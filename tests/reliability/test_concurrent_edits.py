"""Two knowledge managers save the same entry at the same moment, over real HTTP: through the API and
through the admin's change form. Exactly one save wins; the other is refused without overwriting
anything and gets its own text back; the history holds the winner's revision only.

Each round releases both requests together from a barrier, and checks by the order of events (not
timestamps) that they really were in flight at the same time, so the row lock and version check are
exercised, not just a stale read."""

from __future__ import annotations

import html
import itertools
import re
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any

import httpx
import pytest
from django.contrib.auth.models import User
from reversion.models import Version

from knowledge.models import FaqEntry, KnowledgeBase
from knowledge.services import faq_entry_create, knowledge_base_create
from tests.reliability.admin_session import hidden_inputs, sign_in

ROUNDS = 20
PASSWORD = "concurrent-edits-password"
ORIGINAL_ANSWER = "Refunds reach your card within five working days."


@dataclass
class Attempt:
    who: str
    text: str
    response: httpx.Response
    sent: int  # positions in one sequence of events shared by both attempts
    answered: int


@pytest.fixture
def desk(transactional_db: None) -> KnowledgeBase:
    return knowledge_base_create(slug="desk")


@pytest.fixture
def managers(staff_user: Callable[..., User], live_server: Any) -> Iterator[dict[str, httpx.Client]]:
    clients = {}
    for name in ("maria", "li-wei"):
        user = staff_user("knowledge manager", name)
        user.set_password(PASSWORD)
        user.save()
        clients[name] = sign_in(str(live_server.url), username=name, password=PASSWORD)
    yield clients
    for client in clients.values():
        client.close()


def race(send: Callable[[str, str], httpx.Response], texts: dict[str, str], *,
         accepted: Callable[[httpx.Response], bool]) -> tuple[Attempt, Attempt]:
    """``send(who, text)`` for both managers at once; returns (winner, loser), failing unless exactly
    one was ``accepted``."""
    barrier = threading.Barrier(len(texts))
    lock = threading.Lock()
    events = itertools.count()

    def event() -> int:
        with lock:
            return next(events)

    def attempt(who: str) -> Attempt:
        barrier.wait(timeout=30)
        sent = event()
        response = send(who, texts[who])
        return Attempt(who=who, text=texts[who], response=response, sent=sent, answered=event())

    with ThreadPoolExecutor(max_workers=len(texts)) as pool:
        attempts = list(pool.map(attempt, texts))
    # Both were in flight together: both were sent before either was answered.
    assert max(a.sent for a in attempts) < min(a.answered for a in attempts), attempts
    winners = [a for a in attempts if accepted(a.response)]
    losers = [a for a in attempts if not accepted(a.response)]
    assert (len(winners), len(losers)) == (1, 1), [(a.who, a.response.status_code) for a in attempts]
    return winners[0], losers[0]


def assert_history_is_the_winners(entry: FaqEntry, winner: Attempt) -> None:
    entry.refresh_from_db()
    assert (entry.answer, entry.version) == (winner.text, 2)
    assert entry.updated_by is not None and entry.updated_by.username == winner.who
    newest, created = Version.objects.get_for_object(entry).select_related("revision__user")
    assert created.field_dict["answer"] == ORIGINAL_ANSWER
    assert newest.field_dict["answer"] == winner.text
    assert newest.revision.user is not None and newest.revision.user.username == winner.who


def new_entry(kb: KnowledgeBase, number: int) -> FaqEntry:
    return faq_entry_create(kb=kb, data={"question": f"How long does a refund take? (round {number})",
                                         "answer": ORIGINAL_ANSWER, "tags": ["refund"], "language": "en"})


def texts_for(number: int) -> dict[str, str]:
    return {"maria": f"Maria: refunds take 3–5 days (round {number}).",
            "li-wei": f"李伟：退款3到5个工作日到账（第{number}轮）。"}


def api_patch(managers: dict[str, httpx.Client], url: str, who: str, text: str) -> httpx.Response:
    client = managers[who]
    # Session-authenticated writes need the CSRF token, as in the browser.
    return client.patch(url, json={"version": 1, "answer": text}, headers={"X-CSRFToken": client.cookies["csrftoken"]})


def admin_save(managers: dict[str, httpx.Client], url: str, entry: FaqEntry, loaded: dict[str, dict[str, str]],
               who: str, text: str) -> httpx.Response:
    """Submit the change form ``who`` loaded, with their answer."""
    form = loaded[who]
    return managers[who].post(url, data={
        "csrfmiddlewaretoken": form["csrfmiddlewaretoken"], "version": form["version"], "external_id": "",
        "question": entry.question, "summary": "", "answer": text, "tags": ", ".join(entry.tags), "category": "",
        "language": entry.language, "status": entry.status, "_save": "Save"})


def test_api_one_of_two_simultaneous_patches_wins_the_other_gets_409_with_its_text(
    desk: KnowledgeBase, managers: dict[str, httpx.Client],
) -> None:
    for number in range(ROUNDS):
        entry = new_entry(desk, number)
        url = f"/api/v1/kbs/{desk.slug}/entries/{entry.pk}"

        winner, loser = race(partial(api_patch, managers, url), texts_for(number),
                             accepted=lambda response: response.status_code == 200)

        assert loser.response.status_code == 409, loser.response.text
        assert (winner.response.json()["version"], winner.response.json()["updated_by"]) == (2, winner.who)
        body = loser.response.json()
        assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
        error = body["error"]
        assert error["code"] == "conflict"
        details = error["details"]
        assert (details["current_version"], details["expected_version"]) == (2, 1)
        current = details["current"]
        assert (current["answer"], current["version"], current["updated_by"]) == (winner.text, 2, winner.who)
        assert details["submitted"] == {"answer": loser.text}
        assert_history_is_the_winners(entry, winner)


def test_admin_one_of_two_simultaneous_saves_wins_the_other_gets_a_form_error_with_its_text(
    desk: KnowledgeBase, managers: dict[str, httpx.Client],
) -> None:
    for number in range(ROUNDS):
        entry = new_entry(desk, number)
        url = f"/admin/knowledge/faqentry/{entry.pk}/change/"
        # Both load the change form before either saves.
        loaded = {who: hidden_inputs(client.get(url).text) for who, client in managers.items()}
        assert {form["version"] for form in loaded.values()} == {"1"}

        winner, loser = race(partial(admin_save, managers, url, entry, loaded), texts_for(number),
                             accepted=lambda response: response.status_code == 302)

        assert winner.response.headers["location"] == "/admin/knowledge/faqentry/"
        # The loser stays on the form: the error, and the text they typed, still in the answer box.
        assert loser.response.status_code == 200, loser.response.headers.get("location")
        page = loser.response.text
        assert "Someone else saved this entry while you were editing it" in page
        assert re.search(r'<textarea name="answer"[^>]*>\s*' + re.escape(html.escape(loser.text)) + r"</textarea>",
                         page)
        assert_history_is_the_winners(entry, winner)
