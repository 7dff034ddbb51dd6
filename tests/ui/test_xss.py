"""Stored and reflected XSS: hostile text in every field a customer, an agent, a knowledge manager or an
import file can fill, rendered on every page that shows it.

Every page is checked three ways: no payload ran (``window.__xss`` unset, no dialog opened); no payload
became markup (no event-handler attribute, executable script or ``javascript:`` URL carrying it, so a
payload that would run only on hover, or that a Content-Security-Policy happens to block, still fails);
and every payload is on screen literally where it belongs, so a page that renders nothing cannot pass.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from django.utils import timezone
from django.utils.text import Truncator
from playwright.sync_api import Dialog, FilePayload, Locator, Page, expect

from chat.models import Question, Ticket, WorkbenchRun
from chat.selectors import unanswered_queue
from chat.services.ask import AskParams, ask
from knowledge.models import FaqEntry, KnowledgeBase
from knowledge.services import faq_entries_embed, faq_entry_create, faq_entry_update, knowledge_base_create
from tests.conftest import WorkerProcess
from tests.helpers import calibration_in_force

pytestmark = pytest.mark.worker

Shot = Callable[..., Path]

PAYLOADS = (
    "<script>window.__xss=1</script>",
    '<img src=x onerror="window.__xss=1">',
    '<svg onload="window.__xss=1">',
    '"><script>window.__xss=1</script>',
    "javascript:window.__xss=1",
    "</textarea><script>window.__xss=1</script>",
    "{{7*7}}",
    "${7*7}",
    '<iframe src="javascript:window.__xss=1">',
    "' onmouseover='window.__xss=1",
    # Aimed at the answer highlight, which is escaped text plus <mark> tags.
    '</mark><img src=x onerror="window.__xss=1"><mark>',
)
# All of them in one value, for inputs that take a single text: a query, a comment, a search.
REFLECTED = " ".join(PAYLOADS)
DOCUMENTS = "\n---\n".join(PAYLOADS)
# The reranker meets these texts for the first time: on a busy 2-core machine that alone took 15 s.
FIRST_RERANK_MS = 60_000

# Markup that a payload turned into, in the document and in open shadow roots (the widget's).
INJECTED_MARKUP = """() => {
  const found = [];
  const urlAttributes = ["href", "src", "action", "formaction", "data", "xlink:href"];
  const visit = (root) => {
    for (const element of root.querySelectorAll("*")) {
      for (const { name, value } of Array.from(element.attributes)) {
        const lowered = value.trim().toLowerCase();
        if ((name.startsWith("on") && lowered.includes("__xss"))
            || (urlAttributes.includes(name) && lowered.startsWith("javascript:"))) {
          found.push(element.outerHTML.slice(0, 200));
        }
      }
      if (element.tagName === "SCRIPT" && !/json/i.test(element.type) && element.textContent.includes("__xss")) {
        found.push(element.outerHTML.slice(0, 200));
      }
      if (element.shadowRoot) visit(element.shadowRoot);
    }
  };
  visit(document);
  return found;
}"""


def hostile_entry(index: int, payload: str) -> dict[str, Any]:
    return {"external_id": f"xss-{index}", "question": f"Voucher {index} refused {payload}",
            "summary": f"voucher PIN lockout {payload}",
            "answer": f"Voucher {index} is refused after three wrong PINs.\nWait one hour until {payload} unblocks it.",
            "tags": [payload, "voucher"], "category": payload, "language": "en"}


@pytest.fixture
def demo_kb(transactional_db: None, warm_rerank_worker: WorkerProcess) -> KnowledgeBase:
    """The demo knowledge base (the one the widget's key is made for), here of hostile entries only."""
    kb = knowledge_base_create(slug="demo", name="Demo support desk", languages=("en",))
    ids = [faq_entry_create(kb=kb, data=hostile_entry(index, payload)).pk for index, payload in enumerate(PAYLOADS)]
    faq_entries_embed(entry_ids=ids)
    return kb


class Watched:
    """A page that records the dialogs it opens and can say whether any payload ran or became markup."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.dialogs: list[str] = []
        page.on("dialog", self._dismiss)

    def _dismiss(self, dialog: Dialog) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    def assert_inert(self, where: str) -> None:
        assert self.page.evaluate("typeof window.__xss") == "undefined", f"a payload ran on {where}"
        injected = self.page.evaluate(INJECTED_MARKUP)
        assert injected == [], f"payloads became markup on {where}: {injected}"
        assert self.dialogs == [], f"dialogs opened on {where}: {self.dialogs}"


def expect_literal(region: Locator, *texts: str) -> None:
    """Every line of every text is on screen in ``region`` exactly as written (innerText: rendered text
    only, so neither markup nor a template's evaluation of ``{{7*7}}`` would match)."""
    expect(region).to_be_visible()
    for text in texts:
        for line in filter(None, (line.strip() for line in text.splitlines())):
            expect(region).to_contain_text(line, use_inner_text=True)


def payload_of(entry: dict[str, Any]) -> str:
    return PAYLOADS[int(entry["external_id"].removeprefix("xss-"))]


def kb_tune(kb: KnowledgeBase, *, answer: float | None, suggest: float) -> None:
    """Decide by thresholds the test picks; rerank only the three candidates that are shown (top_n),
    which keeps each ask's first rerank short on a busy machine."""
    KnowledgeBase.objects.filter(pk=kb.pk).update(rerank_k=3)
    calibration_in_force(kb, answer=answer, suggest=suggest)
    kb.refresh_from_db()


# --- the widget --------------------------------------------------------------------------------------


def test_widget_shows_hostile_entries_and_questions_as_text(
    live_server: Any, widget_key: str, demo_kb: KnowledgeBase, new_page: Callable[..., Page], shot: Shot,
) -> None:
    """GIVEN a knowledge base whose every field holds a payload
    WHEN a customer types payloads into the widget, gets an answer, then suggestions, then asks for a person
    THEN the widget shows all of it as text."""
    watch = Watched(new_page(locale="en-US"))
    page = watch.page
    page.goto(f"{live_server.url}/demo/?lang=en")
    page.get_by_role("button", name="Questions? Ask us").click()
    box = page.get_by_role("textbox", name="Your question")
    log = page.locator("#kb-chat-widget .log")

    kb_tune(demo_kb, answer=0.0, suggest=0.0)  # a confident answer, with its highlight
    box.fill(REFLECTED)
    box.press("Enter")
    mark = log.locator(".msg.bot mark").first
    expect(mark).to_be_visible(timeout=FIRST_RERANK_MS)
    answered = Question.objects.get().response
    assert answered["decision"] == "answer"
    top = answered["answer"]
    expect_literal(log.locator(".msg.user"), REFLECTED)
    expect_literal(log.locator(".msg.bot").last, top["question"], top["answer"])
    # The payload's sentence shares the question's words, so the payload itself went through <mark>.
    expect(mark).to_contain_text(f"until {payload_of(top)} unblocks", use_inner_text=True)
    watch.assert_inert("the widget's answer")

    kb_tune(demo_kb, answer=None, suggest=0.0)  # never confident: answer and alternatives
    box.fill("my voucher is refused, when does it unblock?")
    box.press("Enter")
    suggestion = log.locator(".msg.bot").last
    expect(suggestion.locator("details")).to_have_count(3)
    suggested = Question.objects.order_by("-pk")[0].response
    assert suggested["decision"] == "suggest"
    for summary in suggestion.locator("summary").all()[1:]:  # the first one opens by itself
        summary.click()
    shown = [suggested["answer"], *suggested["alternatives"]]
    assert len(shown) == 3
    expect_literal(suggestion, *(text for entry in shown for text in (entry["question"], entry["answer"])))
    shot(page, "xss-01-widget-suggestions")

    suggestion.get_by_role("button", name="No").click()
    expect(suggestion).to_contain_text("Thanks for the feedback!")
    # One offer on screen, not one in the log and another in the footer.
    expect(page.locator("#kb-chat-widget").get_by_role("button", name="Talk to a person")).to_have_count(1)
    log.get_by_role("button", name="Talk to a person").click()
    expect(log.locator(".msg.note")).to_contain_text("A support agent will take over this conversation.")
    assert Ticket.objects.get().status == Ticket.Status.HANDED_OFF
    watch.assert_inert("the widget after the hand-off")


# --- the console: inbox, ticket page, insights --------------------------------------------------------


def test_console_and_insights_show_hostile_tickets_as_text(
    live_server: Any, demo_kb: KnowledgeBase, new_page: Callable[..., Page], shot: Shot,
    staff_user: Callable[..., Any],
) -> None:
    """GIVEN one ticket per payload, the payload as the customer's name and in the question, and a
    knowledge base that is never confident (so every question waits in the unanswered queue)
    THEN the inbox, each ticket page and the insights pages show them as text, and so do the
    error messages that echo a forged action back."""
    kb_tune(demo_kb, answer=None, suggest=0.0)
    # Never answered from, so always in the per-entry usage's "never used" list with its category.
    draft = faq_entry_create(kb=demo_kb, data={**hostile_entry(len(PAYLOADS), PAYLOADS[5]), "status": "draft"})
    asked = [(payload, ask(kb=demo_kb, params=AskParams(question=f"voucher {index} refused {payload}"),
                           customer=payload))
             for index, payload in enumerate(PAYLOADS)]
    questions = {question.pk: question for question in Question.objects.select_related("ticket")}
    watch = Watched(new_page(user=staff_user("admin"), base_url=live_server.url))
    page = watch.page

    # --- inbox: stored, and filters from the address --------------------------------------------------
    page.goto(f"{live_server.url}/console/?status=all")
    for payload, response in asked:
        row = page.locator(f'tr[data-ticket="{response["ticket"]}"]')
        expect_literal(row, questions[response["question_id"]].text, payload)
    shot(page, "xss-02-inbox")
    watch.assert_inert("the inbox")
    filters = dict.fromkeys(("status", "kb", "decision", "age", "page"), REFLECTED)
    page.goto(f"{live_server.url}/console/?{urlencode(filters)}")
    expect(page.locator("#inbox-results")).to_contain_text("No tickets match these filters.")
    watch.assert_inert("the inbox filtered by payloads")
    # The API echoes a bad filter in its error, as JSON a browser shows as text.
    api_error = page.goto(f"{live_server.url}/api/v1/tickets?{urlencode({'status': REFLECTED})}")
    assert api_error is not None and api_error.status == 400
    assert api_error.headers["content-type"] == "application/json"
    assert api_error.headers["x-content-type-options"] == "nosniff"
    error = json.loads(page.locator("pre").first.inner_text())["error"]
    assert error["details"]["fields"]["status"] == [f'"{REFLECTED}" is not a valid choice.']
    watch.assert_inert("an API error that echoes its input")

    # --- every ticket page: customer, question, answer with highlight, alternatives, reply boxes ------
    for payload, response in asked:
        question = questions[response["question_id"]]
        page.goto(f"{live_server.url}/console/tickets/{response['ticket']}/")
        page.evaluate("document.querySelectorAll('details').forEach((details) => { details.open = true; })")
        expect_literal(page.locator(".page-head .meta"), payload)
        shown = [response["answer"], *response["alternatives"]]
        expect_literal(page.locator(f"#question-{question.pk}"), question.text,
                       *(text for entry in shown for text in (entry["question"], entry["answer"])))
        expect(page.locator(".answer-card.top mark").first).to_be_visible()
        for entry in shown:  # a payload closing </textarea> early would cut the reply short
            expect(page.locator(f"#reply-{question.pk}-{entry['id']}")).to_have_value(entry["answer"])
        watch.assert_inert(f"the ticket page of {payload}")
    shot(page, "xss-03-ticket", full_page=True)

    # --- what agents type, and errors that echo a forged action ---------------------------------------
    first = questions[asked[0][1]["question_id"]]
    page.goto(f"{live_server.url}/console/tickets/{first.ticket.public_id}/")
    top = page.locator(".answer-card.top")
    top.locator("details.reply summary").click()
    top.locator("textarea").fill(REFLECTED)
    top.get_by_role("button", name="Send to customer").click()
    expect_literal(page.locator('#conversation [data-kind="agent"]'), REFLECTED)
    helpful = top.get_by_role("button", name="Helpful", exact=True)
    helpful.evaluate("(button, value) => { button.value = value; }", REFLECTED)
    helpful.click()
    expect_literal(page.locator(f"#question-{first.pk} .alert.error"), f"action: unknown action {REFLECTED!r}")
    page.locator("input[name=action][value=resolve]").evaluate("(input, value) => { input.value = value; }",
                                                                REFLECTED)
    page.get_by_role("button", name="Resolve").click()
    expect_literal(page.locator(".messages"), f"Unknown action {REFLECTED!r}.")
    watch.assert_inert("the ticket page after forged actions")

    # --- sign-in: what was typed comes back with the error ------------------------------------------------
    visitor = Watched(new_page())
    visitor.page.goto(f"{live_server.url}/console/login/?{urlencode({'next': PAYLOADS[4]})}")
    visitor.page.get_by_label("Username").fill(REFLECTED)
    visitor.page.get_by_label("Password").fill(REFLECTED)
    visitor.page.get_by_role("button", name="Sign in").click()
    expect(visitor.page.get_by_role("alert")).to_contain_text("didn't match")
    expect(visitor.page.get_by_label("Username")).to_have_value(REFLECTED)
    visitor.assert_inert("the sign-in page's error")

    # --- insights, with payloads in the address too ---------------------------------------------------
    hostile_window = urlencode({"kb": REFLECTED, "days": REFLECTED, "answered": REFLECTED})
    page.goto(f"{live_server.url}/console/insights/?{hostile_window}")
    top_rows = page.locator("#top-questions tbody tr td:first-child")
    expect(top_rows).to_have_count(10)  # the ten most asked, of eleven asked once each
    asked_texts = {question.text for question in questions.values()}
    shown_top = [text.strip() for text in top_rows.all_inner_texts()]
    assert len(set(shown_top)) == 10 and set(shown_top) <= asked_texts, shown_top
    watch.assert_inert("the insights dashboard")

    page.goto(f"{live_server.url}/console/insights/queue/?{hostile_window}")
    groups = unanswered_queue(kb=None, since=timezone.now() - timedelta(days=30))
    assert groups
    for group in groups:  # similar wordings are merged: a group shows its text and up to three others
        row = page.locator("#queue tbody tr").filter(has=page.get_by_text(group.text, exact=True))
        others = [text for text, _ in group.wordings.most_common(4) if text != group.text][:3]
        expect_literal(row, group.text, *others)
    shot(page, "xss-04-insights-queue")
    watch.assert_inert("the unanswered queue")
    page.locator("#queue tbody tr").first.get_by_role("link", name="Create FAQ entry from this").click()
    expect(page.get_by_label("Question:")).to_have_value(groups[0].text)
    watch.assert_inert("the admin's add form pre-filled from the queue")

    page.goto(f"{live_server.url}/console/insights/entries/?{urlencode({'kb': 'demo', 'days': REFLECTED})}")
    expect_literal(page.locator("main"), *FaqEntry.objects.filter(kb=demo_kb).values_list("question", flat=True))
    expect_literal(page.locator("#entries-unused"), draft.question, draft.category)
    watch.assert_inert("the entry usage page")


# --- the workbench ---------------------------------------------------------------------------------------


def test_workbench_shows_hostile_queries_and_documents_as_text(
    live_server: Any, demo_kb: KnowledgeBase, new_page: Callable[..., Page], shot: Shot,
    staff_user: Callable[..., Any],
) -> None:
    """Payloads typed into the workbench come back as text: in the form (from the address and after a
    refused run), and in both kinds of run's cards, data matrix, title, instruction and history."""
    watch = Watched(new_page(user=staff_user("admin"), base_url=live_server.url))
    page = watch.page
    query, documents = page.get_by_label("Query", exact=True), page.get_by_label("Documents", exact=True)
    instruction = page.get_by_label("Instruction")

    # Reflected from the address: the form is filled from its query string.
    fields = {"mode": REFLECTED, "kb": REFLECTED, "query": REFLECTED, "documents": DOCUMENTS,
              "instruction": REFLECTED, "split": REFLECTED}
    page.goto(f"{live_server.url}/console/workbench/?{urlencode(fields)}")
    expect(query).to_have_value(REFLECTED)
    expect(documents).to_have_value(DOCUMENTS)
    expect(instruction).to_have_value(REFLECTED)
    watch.assert_inert("the workbench form filled from its address")

    # Reflected on a refused run: the form comes back with what was typed and the errors.
    page.goto(f"{live_server.url}/console/workbench/")
    page.get_by_text("Rerank pasted documents").click()
    query.fill(REFLECTED)
    instruction.fill(REFLECTED)
    page.get_by_role("button", name="Run rerank").click()
    expect(page.locator(".field .error")).to_have_text("paste at least one document")
    expect(query).to_have_value(REFLECTED)
    expect(instruction).to_have_value(REFLECTED)
    watch.assert_inert("the workbench's refused run")

    # Pasted documents: cards, data matrix, title, instruction, history, and the form to run again.
    documents.fill(DOCUMENTS)
    page.get_by_role("button", name="Run rerank").click()
    page.wait_for_url("**/console/workbench/runs/*/", timeout=FIRST_RERANK_MS)
    run = WorkbenchRun.objects.get()
    rows = run.result["rows"]
    assert sorted(row["text"] for row in rows) == sorted(PAYLOADS)
    expect_literal(page.locator("#matrix"), *PAYLOADS)
    expect_literal(page.locator(".grid-results > .panel").first, *(row["text"] for row in rows[:10]))
    expect(page.locator(".rank-card.first mark").first).to_be_visible()
    expect_literal(page.locator("#results-title"), f"Results for “{Truncator(REFLECTED).chars(120)}”")
    expect_literal(page.locator(".history li a").first, Truncator(REFLECTED).chars(70))
    page.get_by_text("Edit the query and run again").click()
    expect(query).to_have_value(REFLECTED)
    expect(documents).to_have_value(DOCUMENTS)
    expect(instruction).to_have_value(REFLECTED)
    shot(page, "xss-05-workbench-documents", full_page=True)
    watch.assert_inert("the workbench's documents run")

    # The knowledge base through the production ask path: hostile entries as titles and texts.
    page.goto(f"{live_server.url}/console/workbench/")
    page.get_by_label("Knowledge base", exact=True).select_option("demo")
    query.fill(REFLECTED)
    instruction.fill(REFLECTED)
    page.get_by_role("button", name="Run rerank").click()
    page.wait_for_url("**/console/workbench/runs/*/", timeout=FIRST_RERANK_MS)
    rows = WorkbenchRun.objects.get(mode="kb").result["rows"]
    assert len(rows) == len(PAYLOADS)
    expect_literal(page.locator(".grid-results > .panel").first,
                   *(text for row in rows[:10] for text in (row["title"], row["text"])))
    expect_literal(page.locator("#matrix"), *(text for row in rows for text in (row["title"], row["text"])))
    expect(page.locator(".rank-card.first mark").first).to_be_visible()
    expect_literal(page.locator("p", has_text="Instruction:"), f"Instruction: {REFLECTED}")
    shot(page, "xss-06-workbench-kb", full_page=True)
    watch.assert_inert("the workbench's knowledge-base run")


# --- the Django admin -------------------------------------------------------------------------------------


def _csv(rows: list[dict[str, str]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue().encode()


def test_admin_shows_hostile_entries_history_and_imports_as_text(
    live_server: Any, demo_kb: KnowledgeBase, new_page: Callable[..., Page], shot: Shot,
    staff_user: Callable[..., Any],
) -> None:
    """GIVEN hostile entries, one of them edited with a hostile revision comment
    THEN the entry list and its filters, the change and add forms, history, compare, the roll-back
    preview and the import preview (of a hostile file, of its bad rows, of a hostile column name)
    show them as text."""
    admin = staff_user("admin")
    entry = FaqEntry.objects.get(kb=demo_kb, external_id="xss-0")
    # A second revision whose comment and answer carry every payload, for the history and its diffs.
    entry = faq_entry_update(entry_id=entry.pk, expected_version=entry.version, edited_by=admin,
                             data={"answer": f"{entry.answer}\n{REFLECTED}"}, comment=REFLECTED)
    entries = list(FaqEntry.objects.filter(kb=demo_kb))
    watch = Watched(new_page(user=admin, base_url=live_server.url))
    page = watch.page
    changelist = f"{live_server.url}/admin/knowledge/faqentry/"

    # --- entry list: questions and categories, the category and tag filters --------------------------
    page.goto(changelist)
    expect_literal(page.locator("#result_list"), *(text for e in entries for text in (e.question, e.category)))
    expect_literal(page.locator("#changelist-filter"), *PAYLOADS)  # each one is a category and a tag
    shot(page, "xss-07-admin-list", full_page=True)
    watch.assert_inert("the entry list")
    for query in ({"q": REFLECTED}, {"category": PAYLOADS[3]}, {"tag": PAYLOADS[3]}):
        page.goto(f"{changelist}?{urlencode(query)}")
        watch.assert_inert(f"the entry list filtered by {query}")
    expect(page.locator("#result_list tbody tr")).to_have_count(1)
    expect_literal(page.locator("#result_list"), f"Voucher 3 refused {PAYLOADS[3]}")

    # --- change form, then a save whose message names the entry ---------------------------------------
    page.goto(f"{changelist}{entry.pk}/change/")
    expect(page.get_by_label("Question:")).to_have_value(entry.question)
    expect(page.get_by_label("Answer:")).to_have_value(entry.answer)
    expect(page.get_by_label("Summary:")).to_have_value(entry.summary)
    expect(page.get_by_label("Tags:")).to_have_value(", ".join(entry.tags))
    expect(page.get_by_label("Category:")).to_have_value(entry.category)
    watch.assert_inert("the change form")
    page.get_by_label("Answer:").fill(f"{entry.answer}\nEdited in the browser.")
    page.get_by_role("button", name="Save and continue editing").click()
    expect_literal(page.locator(".messagelist"), f"“{entry.question}” was changed successfully")
    watch.assert_inert("the change form after saving")

    # --- history, compare, roll back ----------------------------------------------------------------
    page.goto(f"{changelist}{entry.pk}/history/")
    expect_literal(page.locator("#change-history"), REFLECTED)
    watch.assert_inert("the history")
    page.get_by_role("button", name="compare").click()
    expect_literal(page.locator("#content-main"), *PAYLOADS)  # the changed answer, diffed
    shot(page, "xss-08-admin-compare", full_page=True)
    watch.assert_inert("the compare view")
    page.goto(f"{changelist}{entry.pk}/history/")
    page.locator("#change-history tr", has_text=REFLECTED).get_by_role("link").click()
    expect(page.get_by_role("button", name="Roll back to this revision")).to_be_visible()
    expect_literal(page.locator("#content-main"), REFLECTED, *PAYLOADS)
    watch.assert_inert("the roll-back preview")

    # --- the add form, filled from the address --------------------------------------------------------
    page.goto(f"{changelist}add/?{urlencode({'question': REFLECTED, 'answer': REFLECTED, 'summary': REFLECTED})}")
    for label in ("Question:", "Answer:", "Summary:"):
        expect(page.get_by_label(label)).to_have_value(REFLECTED)
    watch.assert_inert("the add form filled from its address")

    # --- import: preview of a hostile file, its bad rows, and an error that names a column -------------
    def upload(name: str, content: bytes) -> None:
        page.goto(f"{changelist}import/")
        page.get_by_label("Knowledge base").select_option(label="demo")
        page.get_by_label("File to import").set_input_files(
            files=FilePayload(name=name, mimeType="text/csv", buffer=content))
        page.get_by_label("Format").select_option(label="csv")
        page.get_by_role("button", name="Submit").click()

    imported = [{**hostile_entry(index, payload), "external_id": f"import-{index}", "tags": payload}
                for index, payload in enumerate(PAYLOADS)]
    upload("hostile.csv", _csv(imported))
    expect(page.get_by_role("button", name="Confirm import")).to_be_visible()
    expect_literal(page.locator("table.import-preview"), *(row["question"] for row in imported))
    shot(page, "xss-09-admin-import-preview", full_page=True)
    watch.assert_inert("the import preview")

    upload("bad-rows.csv", _csv([{"external_id": payload, "question": payload, "status": payload}
                                 for payload in PAYLOADS]))
    expect_literal(page.locator("table.import-preview"), *PAYLOADS)
    watch.assert_inert("the import's bad rows")

    upload("bad-column.csv", _csv([{"question": "Why?", PAYLOADS[0]: "because"}]))
    expect_literal(page.locator(".errorlist"), f"Unknown columns with data: {PAYLOADS[0]} (first in row 2)")
    watch.assert_inert("the import's error naming a column")
