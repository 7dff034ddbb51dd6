"""The agent inbox and the ticket page. Every agent action goes through ``chat.services.console``."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import reverse
from django.views.decorators.http import require_POST

from chat import selectors
from chat.conversation import ticket_conversation
from chat.models import Decision, Question, Scope, Ticket
from chat.services import console
from chat.services.messages import ticket_assign, ticket_unassign
from chat.views.access import console_view, render_console
from knowledge.cases.selectors import regression_case_keys
from knowledge.importing import normalize_question

STATUS_TABS = [("attention", "Needs attention"), ("handed_off", "Handed off"), ("open", "Open"),
               ("resolved", "Resolved"), ("all", "All")]
ASSIGNEE_CHOICES = [("", "Anyone"), ("mine", "Mine"), ("unassigned", "Unassigned")]
AGE_CHOICES = [("", "Any age"), ("1h", "Under 1 hour"), ("24h", "Under 1 day"), ("7d", "Under 7 days"),
               ("older", "Older than 7 days")]


@console_view(Scope.TICKETS)
def inbox(request: HttpRequest) -> HttpResponse:
    filters = selectors.InboxFilters.from_query(request.GET, agent_id=request.user.pk)
    page = Paginator(selectors.ticket_inbox(filters=filters), selectors.INBOX_PAGE).get_page(request.GET.get("page"))
    counts = selectors.ticket_status_counts(filters=filters)
    query = request.GET.copy()
    query.pop("page", None)
    base_query = query.urlencode()
    tabs = []
    for value, label in STATUS_TABS:
        query["status"] = value
        tabs.append({"value": value, "label": label, "count": counts.get(value, 0), "query": query.urlencode()})
    return render_console(request, "chat/console/inbox.html", {
        "page": page, "filters": filters, "tabs": tabs, "kbs": selectors.knowledge_bases(),
        "decisions": Decision.choices, "ages": AGE_CHOICES, "assignees": ASSIGNEE_CHOICES, "base_query": base_query,
    })


@console_view(Scope.TICKETS)
def ticket(request: HttpRequest, public_id: str) -> HttpResponse:
    found = selectors.ticket_detail(public_id=public_id)
    if found is None:
        raise Http404("No such ticket.")
    # Errors of a question's last action, shown in that question's panel (see question_act).
    errors = {question.pk: request.session.pop(f"question-error-{question.pk}", "")
              for question in found.questions.all()}
    # Entries the agent picked or sent for each question, and whether each is kept as a check already.
    kept = regression_case_keys(kb_id=found.kb_id)
    cases = {question.pk: [{"entry": entry_id, "question": text,
                            "kept": (normalize_question(question.text), entry_id) in kept}
                           for entry_id, text in console.case_candidates(question=question).items()]
             for question in found.questions.all()}
    return render_console(request, "chat/console/ticket.html", {
        "ticket": found, "errors": errors, "cases": cases,
        "can_edit_entries": request.user.has_perm("knowledge.change_faqentry"),
        "open": found.status != Ticket.Status.RESOLVED, "conversation": ticket_conversation(ticket=found),
        "reply_draft": request.session.pop(f"reply-draft-{found.pk}", ""),
        "reply_error": request.session.pop(f"reply-error-{found.pk}", ""),
        "agents": selectors.agents_active(),
    })


def _back(ticket_obj: Ticket, anchor: str = "") -> HttpResponseRedirect:
    url = reverse("console:ticket", args=[ticket_obj.public_id])
    # 303: the browser (and htmx) follows with a GET of the updated page.
    return HttpResponseRedirect(url + (f"#{anchor}" if anchor else ""), status=303)


def _entry_id(request: HttpRequest) -> int:
    try:
        return int(request.POST.get("entry", ""))
    except ValueError as error:
        raise ValidationError({"entry": ["missing"]}) from error


@require_POST
@console_view(Scope.TICKETS)
def question_act(request: HttpRequest, public_id: str, question_id: int) -> HttpResponse:
    question = get_object_or_404(Question.objects.select_related("ticket"), pk=question_id,
                                 ticket__public_id=public_id)
    action = request.POST.get("action", "")
    agent = request.user
    try:
        if action in ("helpful", "not_helpful"):
            console.agent_answer_rate(question=question, agent=agent, helpful=action == "helpful")
        elif action == "pick":
            console.agent_alternative_pick(question=question, agent=agent, entry_id=_entry_id(request))
        elif action == "copy":
            console.agent_answer_copy(question=question, agent=agent, entry_id=_entry_id(request))
        elif action == "keep_case":
            console.agent_case_keep(question=question, agent=agent, entry_id=_entry_id(request))
        elif action == "send":
            console.agent_entry_send(question=question, agent=agent, entry_id=_entry_id(request),
                                     reply=request.POST.get("reply", ""))
        else:
            raise ValidationError({"action": [f"unknown action {action!r}"]})
    except ValidationError as error:
        # Shown in the question's own panel, which htmx swaps in (a page-level message would be lost).
        request.session[f"question-error-{question.pk}"] = "; ".join(
            f"{name}: {' '.join(problems)}" for name, problems in error.message_dict.items())
    return _back(question.ticket, f"question-{question.pk}")


@require_POST
@console_view(Scope.TICKETS)
def ticket_act(request: HttpRequest, public_id: str) -> HttpResponse:
    found = get_object_or_404(Ticket, public_id=public_id)
    action = request.POST.get("action", "")
    try:
        if action == "claim":
            ticket_assign(ticket=found, agent=request.user, by=request.user)
            messages.success(request, "You have the ticket.")
        elif action == "assign":
            ticket_assign(ticket=found, agent=selectors.agent_find(pk=request.POST.get("agent", "")), by=request.user)
            messages.success(request, "Ticket assigned.")
        elif action == "unassign":
            ticket_unassign(ticket=found, by=request.user)
            messages.success(request, "Ticket unassigned.")
        elif action == "resolve":
            console.agent_ticket_resolve(ticket=found, agent=request.user)
            messages.success(request, "Ticket resolved.")
        elif action == "hand_off":
            console.agent_ticket_hand_off(ticket=found, agent=request.user)
            messages.success(request, "Ticket handed off.")
        else:
            messages.error(request, f"Unknown action {action!r}.")
    except ValidationError as error:
        messages.error(request, " ".join(error.messages))
    return _back(found)


@require_POST
@console_view(Scope.TICKETS)
def ticket_reply(request: HttpRequest, public_id: str) -> HttpResponse:
    """The reply box. A refused reply comes back in the box with the reason: nothing typed is lost."""
    found = get_object_or_404(Ticket, public_id=public_id)
    text = request.POST.get("reply", "")
    try:
        console.agent_reply_send(ticket=found, agent=request.user, reply=text)
    except ValidationError as error:
        request.session[f"reply-draft-{found.pk}"] = text
        request.session[f"reply-error-{found.pk}"] = " ".join(error.messages)
    return _back(found, "reply")
