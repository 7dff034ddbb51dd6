import hashlib
import secrets
import uuid

from django.contrib.postgres.fields import ArrayField
from django.db import models

from knowledge.models import KnowledgeBase


class Scope(models.TextChoices):
    ASK = "ask", "Ask questions"
    FEEDBACK = "feedback", "Give feedback on answers"
    TICKETS = "tickets", "Read and manage tickets"
    KNOWLEDGE_WRITE = "knowledge:write", "Write knowledge bases and FAQ entries"
    RERANK = "rerank", "Use /v1/rerank"
    ANALYTICS = "analytics", "Read analytics"


PUBLISHABLE_SCOPES = (Scope.ASK, Scope.FEEDBACK)


class ApiKey(models.Model):
    """A key for the API. Only its SHA-256 is stored: the key itself is shown once, at creation.

    Publishable keys live in web pages (the chat widget): bound to one knowledge base, limited to
    asking and feedback, and only from allowed origins. Secret keys are for servers, with explicit
    scopes, bound to one knowledge base or (kb empty) to all of them."""

    class Kind(models.TextChoices):
        PUBLISHABLE = "publishable", "Publishable (browser widget)"
        SECRET = "secret", "Secret (server)"

    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    kb = models.ForeignKey(KnowledgeBase, null=True, blank=True, on_delete=models.CASCADE, related_name="api_keys")
    scopes = ArrayField(models.CharField(max_length=32, choices=Scope.choices), default=list)
    allowed_origins = ArrayField(models.CharField(max_length=300), default=list, blank=True)
    # High-entropy keys: a plain SHA-256 is enough, and lets us look the key up by its digest.
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    key_prefix = models.CharField(max_length=16, editable=False, help_text="First characters, to recognise it.")
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                condition=~models.Q(kind="publishable") | models.Q(kb__isnull=False),
                name="publishable_key_has_kb",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.key_prefix}…)"

    @staticmethod
    def digest(raw_key: str) -> str:
        return hashlib.sha256(raw_key.encode()).hexdigest()

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes

    def allows_kb(self, kb_id: int) -> bool:
        return self.kb_id is None or self.kb_id == kb_id


class Decision(models.TextChoices):
    ANSWER = "answer", "Answer"
    SUGGEST = "suggest", "Suggest"
    HANDOFF = "handoff", "Hand off"


class Ticket(models.Model):
    """A customer's conversation: one or more questions, the answers given, and its outcome."""

    class Status(models.TextChoices):
        OPEN = "open", "Open"
        HANDED_OFF = "handed_off", "Handed off"
        RESOLVED = "resolved", "Resolved"

    # What clients see: unguessable, so holding a ticket's id is what lets a widget follow it up.
    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    kb = models.ForeignKey(KnowledgeBase, on_delete=models.CASCADE, related_name="tickets")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OPEN)
    customer = models.CharField(max_length=200, blank=True)
    channel = models.CharField(max_length=32, default="api")
    assigned_to = models.ForeignKey("auth.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    handed_off_at = models.DateTimeField(null=True, blank=True)
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-updated_at"]
        indexes = [models.Index(fields=["kb", "status", "-updated_at"], name="ticket_inbox")]

    def __str__(self) -> str:
        return f"Ticket {self.pk} ({self.status})"


class Question(models.Model):
    """One question asked on a ticket and the answer we gave (the stored response)."""

    class State(models.TextChoices):
        PENDING = "pending", "Pending"
        ANSWERED = "answered", "Answered"
        FAILED = "failed", "Failed"

    ticket = models.ForeignKey(Ticket, on_delete=models.CASCADE, related_name="questions")
    text = models.TextField()
    normalized = models.TextField()
    instruction = models.TextField(blank=True)
    filters = models.JSONField(default=dict, blank=True)
    top_n = models.PositiveIntegerField(null=True, blank=True)
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    decision = models.CharField(max_length=16, choices=Decision.choices, blank=True)
    response = models.JSONField(default=dict, blank=True)
    rerank_status = models.CharField(max_length=16, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    answered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at", "pk"]

    def __str__(self) -> str:
        return self.text[:80]


class Message(models.Model):
    """What a person said on a ticket, or what happened to it. The engine's own turns (questions it
    was asked, answers it gave) are the ticket's ``Question`` rows; a conversation is both, in time order.

    Every insert first locks its ticket's row (``chat.services.messages``), so on one ticket ids grow
    in commit order and the id is a cursor: a poll for ``id > cursor`` never skips a late commit."""

    class Kind(models.TextChoices):
        CUSTOMER = "customer", "Customer message"
        AGENT = "agent", "Agent reply"
        EVENT = "event", "Event"

    class Event(models.TextChoices):
        HANDED_OFF = "handed_off", "Handed off"
        ASSIGNED = "assigned", "Assigned"
        UNASSIGNED = "unassigned", "Unassigned"
        RESOLVED = "resolved", "Resolved"

    class Via(models.TextChoices):
        WIDGET = "widget", "Widget"
        API = "api", "API"
        CONSOLE = "console", "Console"
        HELPDESK = "helpdesk", "Helpdesk"
        SYSTEM = "system", "kbservice"  # e.g. a question the engine could not answer, handed off

    ticket = models.ForeignKey(Ticket, on_delete=models.CASCADE, related_name="messages")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    body = models.TextField(blank=True)
    event = models.CharField(max_length=16, choices=Event.choices, blank=True)
    # An agent reply that sent an FAQ entry's answer: "agent used entry X" (not a rating of it).
    entry = models.ForeignKey("knowledge.FaqEntry", null=True, blank=True, on_delete=models.SET_NULL,
                              related_name="+")
    entry_edited = models.BooleanField(null=True, blank=True)
    author = models.ForeignKey("auth.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    # Who, as shown to the customer: the console user's name, or the helpdesk agent's.
    author_name = models.CharField(max_length=200, blank=True)
    via = models.CharField(max_length=16, choices=Via.choices)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["pk"]
        indexes = [models.Index(fields=["ticket", "id"], name="message_ticket_cursor")]
        constraints = [
            models.CheckConstraint(condition=~models.Q(kind="event") | ~models.Q(event=""), name="event_message_named"),
            models.CheckConstraint(condition=models.Q(kind="event") | ~models.Q(body=""), name="message_has_body"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} on ticket {self.ticket_id}"


class Feedback(models.Model):
    class Source(models.TextChoices):
        CUSTOMER = "customer", "Customer"
        AGENT = "agent", "Agent"

    question = models.ForeignKey(Question, on_delete=models.CASCADE, related_name="feedback")
    helpful = models.BooleanField(null=True, blank=True)
    chosen_entry = models.ForeignKey("knowledge.FaqEntry", null=True, blank=True, on_delete=models.SET_NULL,
                                     related_name="+")
    comment = models.TextField(blank=True)
    source = models.CharField(max_length=16, choices=Source.choices, default=Source.CUSTOMER)
    created_by = models.ForeignKey("auth.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"Feedback on question {self.question_id}"


class AskLog(models.Model):
    """One row per ask, for analytics: what was asked, what we decided, how fast, from cache or not."""

    kb = models.ForeignKey(KnowledgeBase, on_delete=models.CASCADE, related_name="+")
    question = models.ForeignKey(Question, null=True, blank=True, on_delete=models.SET_NULL, related_name="logs")
    text = models.TextField()
    normalized = models.TextField()
    decision = models.CharField(max_length=16, choices=Decision.choices)
    top_entry = models.ForeignKey("knowledge.FaqEntry", null=True, blank=True, on_delete=models.SET_NULL,
                                  related_name="+")
    top_score = models.FloatField(null=True, blank=True)
    cache = models.CharField(max_length=8)
    degraded = models.BooleanField(default=False)
    timings_ms = models.JSONField(default=dict)
    source = models.CharField(max_length=32, default="api")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["kb", "-created_at"], name="asklog_kb_time")]

    def __str__(self) -> str:
        return f"{self.decision}: {self.text[:60]}"


class WorkbenchRun(models.Model):
    """One query run in the rerank workbench, kept so staff can reopen, compare and export it.

    ``result`` holds what the page shows (ranked rows with every stage's score, timings, engine and
    model), so a past run renders the same even after the FAQ entries or the reranker change."""

    class Mode(models.TextChoices):
        KB = "kb", "Ask a knowledge base"
        DOCUMENTS = "documents", "Rerank pasted documents"

    mode = models.CharField(max_length=16, choices=Mode.choices)
    kb = models.ForeignKey(KnowledgeBase, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    query = models.TextField()
    instruction = models.TextField(blank=True)
    documents = models.JSONField(default=list, blank=True)
    status = models.CharField(max_length=16)
    engine = models.CharField(max_length=64, blank=True)
    model = models.CharField(max_length=300, blank=True)
    total_ms = models.FloatField(null=True, blank=True)
    result = models.JSONField(default=dict, blank=True)
    created_by = models.ForeignKey("auth.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        indexes = [models.Index(fields=["created_by", "-created_at"], name="workbench_run_by_user")]

    def __str__(self) -> str:
        return f"{self.get_mode_display()}: {self.query[:60]}"


def _webhook_secret() -> str:
    return secrets.token_urlsafe(32)


class HelpdeskWebhook(models.Model):
    """Where a knowledge base hands its conversations to the team's own helpdesk: every hand-off and
    every later customer message is POSTed there, signed with ``secret`` (see chat.services.webhooks)."""

    kb = models.OneToOneField(KnowledgeBase, on_delete=models.CASCADE, related_name="helpdesk_webhook")
    url = models.URLField(max_length=500, help_text="The helpdesk's endpoint (https in production).")
    secret = models.CharField(max_length=100, default=_webhook_secret,
                              help_text="Shared secret for the X-Kbservice-Signature HMAC-SHA256.")
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.kb.slug} → {self.url}"


class WebhookDelivery(models.Model):
    """One event for the helpdesk, delivered (retried with back-off) by a Celery task."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        DELIVERED = "delivered", "Delivered"
        FAILED = "failed", "Failed (gave up)"

    webhook = models.ForeignKey(HelpdeskWebhook, on_delete=models.CASCADE, related_name="deliveries")
    ticket = models.ForeignKey(Ticket, on_delete=models.CASCADE, related_name="+")
    message = models.ForeignKey(Message, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    event = models.CharField(max_length=32)
    payload = models.JSONField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        verbose_name_plural = "webhook deliveries"
        indexes = [models.Index(fields=["webhook", "-created_at"], name="delivery_webhook_time")]

    def __str__(self) -> str:
        return f"{self.event} #{self.pk} ({self.status})"


class WebhookAttempt(models.Model):
    delivery = models.ForeignKey(WebhookDelivery, on_delete=models.CASCADE, related_name="attempt_log")
    status_code = models.PositiveIntegerField(null=True, blank=True)
    error = models.CharField(max_length=500, blank=True)
    duration_ms = models.FloatField()
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["at", "pk"]

    def __str__(self) -> str:
        return f"attempt on delivery {self.delivery_id}: {self.status_code or self.error}"
