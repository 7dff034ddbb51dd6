import hashlib

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
