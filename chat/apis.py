"""Public REST API: ask, tickets, feedback."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import QuerySet
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import exceptions, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from chat.conversation import (
    message_item,
    ticket_conversation,
    ticket_conversation_prefetch,
    ticket_cursor,
    ticket_poll,
)
from chat.models import ApiKey, Decision, Feedback, Message, Question, Scope, Ticket
from chat.services.ask import AskParams, ask, question_clean
from chat.services.messages import agent_message_send, customer_message_send
from chat.services.tickets import (
    feedback_create,
    question_submit,
    ticket_create,
    ticket_hand_off,
    ticket_resolve,
)
from kbservice.api.auth import requires_scope
from kbservice.api.schema import errors
from kbservice.api.throttling import TicketPollThrottle
from knowledge.apis.common import MAX_ID, Pagination
from knowledge.apis.entries import FaqTextOutput
from knowledge.models import KnowledgeBase
from knowledge.selectors import SearchFilters


def raise_drf(error: DjangoValidationError) -> None:
    raise exceptions.ValidationError(error.message_dict if hasattr(error, "error_dict") else error.messages)


def kb_for(request: Request, slug: str) -> KnowledgeBase:
    """The knowledge base, if this caller may use it; 404 otherwise (never reveal others' bases).

    A key bound to a knowledge base loaded it with the key, in this request: no second query."""
    key = request.auth
    if isinstance(key, ApiKey) and key.kb is not None and key.kb.slug == slug:
        return key.kb
    kb = KnowledgeBase.objects.filter(slug=slug).first()
    if kb is None or (isinstance(key, ApiKey) and not key.allows_kb(kb.pk)):
        raise exceptions.NotFound(f"No knowledge base {slug!r}.")
    return kb


def ticket_for(request: Request, public_id: Any) -> Ticket:
    ticket = Ticket.objects.select_related("kb").filter(public_id=public_id).first()
    if ticket is None or (isinstance(request.auth, ApiKey) and not request.auth.allows_kb(ticket.kb_id)):
        raise exceptions.NotFound("No such ticket.")
    return ticket


class FiltersInput(serializers.Serializer):
    tags = serializers.ListField(child=serializers.CharField(max_length=64), required=False, max_length=20)
    category = serializers.CharField(required=False, allow_blank=True, max_length=200)
    language = serializers.CharField(required=False, allow_blank=True, max_length=16)


class QuestionField(serializers.CharField):
    default_error_messages = {"blank": "must not be empty"}

    def __init__(self, **kwargs: Any) -> None:
        # max_length checks (and documents) the stripped text, as question_clean does.
        super().__init__(trim_whitespace=False, max_length=settings.KB_MAX_QUESTION_CHARS, **kwargs)

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        try:
            return question_clean(text=data)
        except DjangoValidationError as error:
            raise serializers.ValidationError(error.message_dict["question"]) from error


class AskInput(serializers.Serializer):
    kb = serializers.SlugField(max_length=64)
    question = QuestionField()
    instruction = serializers.CharField(required=False, allow_blank=True, max_length=2000)
    filters = FiltersInput(required=False)
    top_n = serializers.IntegerField(required=False, min_value=1, max_value=20)
    ticket = serializers.UUIDField(required=False)
    customer = serializers.CharField(required=False, allow_blank=True, max_length=200)

    def params(self) -> AskParams:
        data = self.validated_data
        filters = data.get("filters") or {}
        return AskParams(
            question=data["question"], instruction=data.get("instruction", ""),
            filters=SearchFilters(tags=tuple(filters.get("tags", ())), category=filters.get("category", ""),
                                  language=filters.get("language", "")),
            top_n=data.get("top_n"),
        )


# Output shapes, for the schema: the services build these bodies as plain dicts.
class ScoresOutput(serializers.Serializer):
    vector = serializers.FloatField(allow_null=True)
    keyword = serializers.FloatField(allow_null=True)
    fused = serializers.FloatField()
    rerank = serializers.FloatField(allow_null=True, help_text="null when the answer is degraded")


class HighlightOutput(serializers.Serializer):
    spans = inline_serializer("HighlightSpan", {"start": serializers.IntegerField(),
                                                "end": serializers.IntegerField()}, many=True)
    html = serializers.CharField(help_text="The answer, escaped, with <mark> around the matching sentence(s).")


class AnsweredEntryOutput(FaqTextOutput):
    id = serializers.IntegerField()
    revision = serializers.IntegerField(help_text="The entry's version this answer was given from.")
    rank = serializers.IntegerField()
    scores = ScoresOutput()
    recall_ranks = inline_serializer("RecallRanks", {"vector": serializers.IntegerField(allow_null=True),
                                                     "keyword": serializers.IntegerField(allow_null=True)})
    highlight = HighlightOutput()


class RerankStatusOutput(serializers.Serializer):
    engine = serializers.CharField()
    model = serializers.CharField()
    status = serializers.ChoiceField(choices=["ok", "degraded", "skipped"])
    reason = serializers.CharField(
        required=False,
        help_text="Why the answer is degraded: timeout, backlog, no_worker (no rerank worker was ready, or the last "
                  "one died while it waited), broker_unavailable or error.")
    late = serializers.BooleanField(required=False, help_text="Reranked after a degraded answer.")


class AnswerOutput(serializers.Serializer):
    decision = serializers.ChoiceField(choices=Decision.choices)
    answer = AnsweredEntryOutput(allow_null=True)
    alternatives = AnsweredEntryOutput(many=True)
    rerank = RerankStatusOutput()


class AskOutput(AnswerOutput):
    ticket = serializers.UUIDField()
    question_id = serializers.IntegerField()
    candidates = serializers.ListField(child=serializers.IntegerField(), help_text="Entry ids, best first.")
    thresholds = inline_serializer("Thresholds", {
        "answer": serializers.FloatField(allow_null=True, help_text="null: this base does not auto-answer."),
        "suggest": serializers.FloatField()})
    calibrated = serializers.BooleanField(help_text="The decision came from a calibrated threshold (kb_calibrate) "
                                                    "that measured this reranker; false: uncalibrated, never answer.")
    recall = inline_serializer("RecallStages", {
        "language": serializers.CharField(help_text="The question's language, which picks the recall settings."),
        "fusion": serializers.CharField(
            help_text="How the vector and full-text lists were merged, e.g. \"linear 0.7\", or \"skipped: vector "
                      "only\" for a language where fusion measured worse than its better input."),
    })
    cache = serializers.ChoiceField(choices=["hit", "miss", "shared"])
    timings_ms = serializers.DictField(child=serializers.FloatField())


class AskApi(APIView):
    permission_classes = [requires_scope(Scope.ASK)]

    @extend_schema(request=AskInput, responses={200: AskOutput, **errors(404)}, operation_id="ask")
    def post(self, request: Request) -> Response:
        data = AskInput(data=request.data)
        data.is_valid(raise_exception=True)
        kb = kb_for(request, data.validated_data["kb"])
        ticket = None
        if "ticket" in data.validated_data:
            ticket = ticket_for(request, data.validated_data["ticket"])
            if ticket.kb_id != kb.pk:
                raise exceptions.ValidationError({"ticket": ["belongs to another knowledge base"]})
        channel = "widget" if isinstance(request.auth, ApiKey) and request.auth.kind == "publishable" else "api"
        result = ask(kb=kb, params=data.params(), ticket=ticket, customer=data.validated_data.get("customer", ""),
                     channel=channel)
        return Response(result)


class TicketCreateInput(AskInput):
    ticket = None  # type: ignore[assignment]


def ticket_payload(ticket: Ticket, *, with_questions: bool = True) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": str(ticket.public_id), "kb": ticket.kb.slug, "status": ticket.status, "customer": ticket.customer,
        "channel": ticket.channel, "created_at": ticket.created_at, "updated_at": ticket.updated_at,
        "handed_off_at": ticket.handed_off_at, "resolved_at": ticket.resolved_at,
    }
    if with_questions:
        ticket_conversation_prefetch(ticket)
        conversation = ticket_conversation(ticket=ticket)
        body["messages"] = conversation
        body["cursor"] = ticket_cursor(conversation)
        body["questions"] = [
            {"id": q.pk, "question": q.text, "state": q.state, "decision": q.decision or None,
             "created_at": q.created_at, "answered_at": q.answered_at,
             **({key: q.response.get(key) for key in ("answer", "alternatives", "rerank")} if q.response else {})}
            for q in ticket.questions.all()
        ]
    return body


class TicketOutput(serializers.Serializer):
    id = serializers.UUIDField()
    kb = serializers.SlugField()
    status = serializers.ChoiceField(choices=Ticket.Status.choices)
    customer = serializers.CharField()
    channel = serializers.CharField()
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()
    handed_off_at = serializers.DateTimeField(allow_null=True)
    resolved_at = serializers.DateTimeField(allow_null=True)


class TicketQuestionOutput(serializers.Serializer):
    id = serializers.IntegerField()
    question = serializers.CharField()
    state = serializers.ChoiceField(choices=Question.State.choices)
    decision = serializers.ChoiceField(choices=Decision.choices, allow_null=True)
    created_at = serializers.DateTimeField()
    answered_at = serializers.DateTimeField(allow_null=True)
    # Present once the question is answered:
    answer = AnsweredEntryOutput(allow_null=True, required=False)
    alternatives = AnsweredEntryOutput(many=True, required=False)
    rerank = RerankStatusOutput(required=False)


class ConversationItemOutput(serializers.Serializer):
    id = serializers.CharField(help_text="q<question id>, a<question id> (its answer) or m<message id>.")
    seq = serializers.IntegerField(required=False, help_text="Messages only: the value to poll after.")
    kind = serializers.ChoiceField(choices=["question", "answer", *Message.Kind.values])
    at = serializers.DateTimeField()
    via = serializers.ChoiceField(choices=Message.Via.choices, required=False)
    text = serializers.CharField(required=False, help_text="What the customer or agent wrote.")
    event = serializers.ChoiceField(choices=Message.Event.choices, required=False)
    author = serializers.CharField(required=False, allow_blank=True, help_text="Agent replies: who wrote it.")
    entry = inline_serializer("SentEntry", {
        "id": serializers.IntegerField(), "external_id": serializers.CharField(allow_blank=True),
        "question": serializers.CharField(), "edited": serializers.BooleanField()},
        required=False, allow_null=True, help_text="Agent replies: the FAQ entry sent, if one was.")
    question_id = serializers.IntegerField(required=False)
    decision = serializers.ChoiceField(choices=Decision.choices, required=False)
    answer = AnsweredEntryOutput(allow_null=True, required=False)
    alternatives = AnsweredEntryOutput(many=True, required=False)
    rerank = RerankStatusOutput(required=False)


class TicketWithQuestionsOutput(TicketOutput):
    messages = ConversationItemOutput(many=True, help_text="The conversation, oldest first.")
    cursor = serializers.IntegerField(help_text="Poll GET …/messages?after=<cursor> for what comes next.")
    questions = TicketQuestionOutput(many=True)


class QueuedOutput(serializers.Serializer):
    ticket = serializers.UUIDField()
    question_id = serializers.IntegerField()
    state = serializers.ChoiceField(choices=Question.State.choices)


class TicketQueuedOutput(QueuedOutput):
    poll = serializers.CharField(help_text="Where to GET the ticket until the question is answered.")


class TicketFilter(serializers.Serializer):
    kb = serializers.SlugField(required=False, allow_blank=True)
    status = serializers.ChoiceField(choices=Ticket.Status.choices, required=False, allow_blank=True)


class TicketListCreateApi(APIView):
    pagination_class = Pagination

    def get_permissions(self) -> list[Any]:
        scope = Scope.ASK if self.request.method == "POST" else Scope.TICKETS
        return [requires_scope(scope)()]

    @extend_schema(request=TicketCreateInput, responses={202: TicketQueuedOutput, **errors(404)},
                   operation_id="ticket_create")
    def post(self, request: Request) -> Response:
        data = TicketCreateInput(data=request.data)
        data.is_valid(raise_exception=True)
        kb = kb_for(request, data.validated_data["kb"])
        channel = "widget" if isinstance(request.auth, ApiKey) and request.auth.kind == "publishable" else "api"
        ticket = ticket_create(kb=kb, customer=data.validated_data.get("customer", ""), channel=channel)
        question = question_submit(ticket=ticket, params=data.params())
        return Response({"ticket": str(ticket.public_id), "question_id": question.pk, "state": question.state,
                         "poll": f"/api/v1/tickets/{ticket.public_id}"}, status=status.HTTP_202_ACCEPTED)

    @extend_schema(parameters=[TicketFilter], responses={200: TicketOutput(many=True)}, operation_id="ticket_list")
    def get(self, request: Request) -> Response:
        filters = TicketFilter(data=request.query_params)
        filters.is_valid(raise_exception=True)
        tickets: QuerySet[Ticket] = Ticket.objects.select_related("kb").order_by("-updated_at")
        if isinstance(request.auth, ApiKey) and request.auth.kb_id is not None:
            tickets = tickets.filter(kb_id=request.auth.kb_id)
        for param, field in (("kb", "kb__slug"), ("status", "status")):
            if filters.validated_data.get(param):
                tickets = tickets.filter(**{field: filters.validated_data[param]})
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(tickets, request, view=self) or []
        return paginator.get_paginated_response([ticket_payload(t, with_questions=False) for t in page])


class TicketDetailApi(APIView):
    permission_classes = [requires_scope(Scope.ASK)]

    @extend_schema(responses={200: TicketWithQuestionsOutput}, operation_id="ticket_get")
    def get(self, request: Request, public_id: str) -> Response:
        return Response(ticket_payload(ticket_for(request, public_id)))


class FollowUpInput(serializers.Serializer):
    question = QuestionField()
    instruction = serializers.CharField(required=False, allow_blank=True, max_length=2000)


class TicketQuestionApi(APIView):
    permission_classes = [requires_scope(Scope.ASK)]

    @extend_schema(request=FollowUpInput, responses={202: QueuedOutput}, operation_id="ticket_follow_up")
    def post(self, request: Request, public_id: str) -> Response:
        ticket = ticket_for(request, public_id)
        data = FollowUpInput(data=request.data)
        data.is_valid(raise_exception=True)
        if ticket.status == Ticket.Status.RESOLVED:
            raise exceptions.ValidationError({"ticket": ["is resolved; open a new ticket"]})
        question = question_submit(ticket=ticket, params=AskParams(
            question=data.validated_data["question"], instruction=data.validated_data.get("instruction", "")))
        return Response({"ticket": str(ticket.public_id), "question_id": question.pk, "state": question.state},
                        status=status.HTTP_202_ACCEPTED)


class MessagesQuery(serializers.Serializer):
    after = serializers.IntegerField(required=False, min_value=0, max_value=2**63 - 1, default=0)


class MessagesOutput(serializers.Serializer):
    ticket = serializers.UUIDField()
    status = serializers.ChoiceField(choices=Ticket.Status.choices)
    assigned = serializers.BooleanField(help_text="Whether a person has taken the ticket.")
    messages = ConversationItemOutput(many=True)
    cursor = serializers.IntegerField()


class CustomerMessageInput(serializers.Serializer):
    text = QuestionField()


class TicketMessagesApi(APIView):
    """The widget's poll (GET, after a cursor) and the customer writing to the person (POST).

    A poll is two indexed reads and no write, and it is throttled per ticket rather than from the
    key's ask budget: every open widget of a site shares one publishable key."""

    permission_classes = [requires_scope(Scope.ASK)]

    def get_throttles(self) -> list[Any]:
        if self.request.method == "GET":
            return [TicketPollThrottle()]
        return super().get_throttles()

    @extend_schema(parameters=[MessagesQuery], responses={200: MessagesOutput, **errors(404)},
                   operation_id="ticket_messages")
    def get(self, request: Request, public_id: str) -> Response:
        query = MessagesQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        after = query.validated_data["after"]
        poll = ticket_poll(public_id=public_id, after=after)
        if poll is None or (isinstance(request.auth, ApiKey) and not request.auth.allows_kb(poll.kb_id)):
            raise exceptions.NotFound("No such ticket.")
        items = [message_item(message) for message in poll.messages]
        return Response({"ticket": str(public_id), "status": poll.status, "assigned": poll.assigned,
                         "messages": items, "cursor": max((item["seq"] for item in items), default=after)})

    @extend_schema(request=CustomerMessageInput, responses={201: ConversationItemOutput, **errors(400, 404)},
                   operation_id="ticket_message_create")
    def post(self, request: Request, public_id: str) -> Response:
        ticket = ticket_for(request, public_id)
        data = CustomerMessageInput(data=request.data)
        data.is_valid(raise_exception=True)
        via = Message.Via.WIDGET if ticket.channel == "widget" else Message.Via.API
        try:
            message = customer_message_send(ticket=ticket, text=data.validated_data["text"], via=via)
        except DjangoValidationError as error:
            raise_drf(error)
        return Response(message_item(message), status=status.HTTP_201_CREATED)


class HelpdeskReplyInput(serializers.Serializer):
    text = serializers.CharField(trim_whitespace=False, max_length=4000)
    author = serializers.CharField(required=False, allow_blank=True, max_length=200, default="")


class TicketReplyApi(APIView):
    """A person's reply from the team's own helpdesk (or any server integration): the customer sees it
    in the widget as an agent message."""

    permission_classes = [requires_scope(Scope.TICKETS)]

    @extend_schema(request=HelpdeskReplyInput, responses={201: ConversationItemOutput, **errors(400, 404)},
                   operation_id="ticket_reply_create")
    def post(self, request: Request, public_id: str) -> Response:
        ticket = ticket_for(request, public_id)
        data = HelpdeskReplyInput(data=request.data)
        data.is_valid(raise_exception=True)
        staff = request.user if getattr(request.user, "pk", None) else None
        via = Message.Via.HELPDESK if isinstance(request.auth, ApiKey) else Message.Via.API
        try:
            message = agent_message_send(ticket=ticket, body=data.validated_data["text"], via=via, author=staff,
                                         author_name=data.validated_data["author"].strip())
        except DjangoValidationError as error:
            raise_drf(error)
        return Response(message_item(message), status=status.HTTP_201_CREATED)


class TicketHandOffApi(APIView):
    """The customer (or an agent) asks for a person."""

    permission_classes = [requires_scope(Scope.ASK)]

    @extend_schema(request=None, responses={200: TicketWithQuestionsOutput, **errors(400)},
                   operation_id="ticket_hand_off")
    def post(self, request: Request, public_id: str) -> Response:
        try:
            ticket = ticket_hand_off(ticket=ticket_for(request, public_id),
                                     via=Message.Via.WIDGET if isinstance(request.auth, ApiKey) and
                                     request.auth.kind == ApiKey.Kind.PUBLISHABLE else Message.Via.API)
        except DjangoValidationError as error:
            raise_drf(error)
        return Response(ticket_payload(ticket))


class TicketResolveApi(APIView):
    permission_classes = [requires_scope(Scope.TICKETS)]

    @extend_schema(request=None, responses={200: TicketWithQuestionsOutput}, operation_id="ticket_resolve")
    def post(self, request: Request, public_id: str) -> Response:
        by = request.user if getattr(request.user, "pk", None) else None
        return Response(ticket_payload(ticket_resolve(ticket=ticket_for(request, public_id), resolved_by=by)))


class FeedbackInput(serializers.Serializer):
    ticket = serializers.UUIDField()
    question_id = serializers.IntegerField(min_value=1, max_value=MAX_ID)
    helpful = serializers.BooleanField(required=False, allow_null=True, default=None)
    chosen_entry = serializers.IntegerField(required=False, allow_null=True, min_value=1, max_value=MAX_ID)
    comment = serializers.CharField(required=False, allow_blank=True, max_length=4000, default="")


# Built inline: a serializer attribute named "source" would shadow Field.source.
FeedbackOutput = inline_serializer("FeedbackOutput", {
    "id": serializers.IntegerField(), "question_id": serializers.IntegerField(),
    "helpful": serializers.BooleanField(allow_null=True), "chosen_entry": serializers.IntegerField(allow_null=True),
    "comment": serializers.CharField(allow_blank=True),
    "source": serializers.ChoiceField(choices=Feedback.Source.choices),
})


class FeedbackApi(APIView):
    permission_classes = [requires_scope(Scope.FEEDBACK)]

    @extend_schema(request=FeedbackInput, responses={201: FeedbackOutput, **errors(404)},
                   operation_id="feedback_create")
    def post(self, request: Request) -> Response:
        data = FeedbackInput(data=request.data)
        data.is_valid(raise_exception=True)
        ticket = ticket_for(request, data.validated_data["ticket"])
        question = get_object_or_404(Question, pk=data.validated_data["question_id"], ticket=ticket)
        # Keys are customers' widgets and integrations; signed-in staff are agents.
        source = "customer" if isinstance(request.auth, ApiKey) else "agent"
        try:
            feedback = feedback_create(
                question=question, helpful=data.validated_data["helpful"],
                chosen_entry_id=data.validated_data.get("chosen_entry"), comment=data.validated_data["comment"],
                source=source, created_by=request.user,
            )
        except DjangoValidationError as error:
            raise_drf(error)
        return Response({"id": feedback.pk, "question_id": question.pk, "helpful": feedback.helpful,
                         "chosen_entry": feedback.chosen_entry_id, "comment": feedback.comment,
                         "source": feedback.source}, status=status.HTTP_201_CREATED)
