import reversion
from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.contrib.postgres.indexes import GinIndex
from django.contrib.postgres.search import SearchVectorField
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from pgvector.django import VectorField

# A target below one half would certify answers that are more often wrong than right.
TARGET_RANGE = [MinValueValidator(0.5), MaxValueValidator(0.999)]
DEFAULT_INSTRUCTION = "Given a customer's support question, judge whether the FAQ entry solves it"


class KnowledgeBase(models.Model):
    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    languages = ArrayField(models.CharField(max_length=16), default=list, blank=True,
                           help_text="Languages of its entries, e.g. zh, en.")
    embed_model = models.CharField(max_length=300, help_text="Embedding model its vectors are made with.")
    embed_dimensions = models.PositiveIntegerField()
    # Set while a re-embed with another model runs; the old vectors keep serving until it completes.
    pending_embed_model = models.CharField(max_length=300, blank=True)
    rerank_instruction = models.TextField(default=DEFAULT_INSTRUCTION,
                                          help_text="Instruction given to Qwen3-Reranker (in English).")
    # The answer threshold is not set by hand: it comes from the current calibration (kb_calibrate),
    # and without one that applies the base never auto-answers.
    suggest_threshold = models.FloatField(default=0.25, help_text="Uncalibrated: below this, hand off.")
    target_precision = models.FloatField(default=0.9, validators=TARGET_RANGE,
                                         help_text="Precision auto-answers must be shown to reach (kb_calibrate).")
    target_confidence = models.FloatField(default=0.95, validators=TARGET_RANGE,
                                          help_text="Confidence of that guarantee.")
    calibration = models.ForeignKey("Calibration", null=True, blank=True, on_delete=models.SET_NULL,
                                    related_name="+", editable=False, help_text="The calibration in force.")
    recall_k = models.PositiveIntegerField(default=50)
    rerank_k = models.PositiveIntegerField(default=20)
    top_n = models.PositiveIntegerField(default=3)
    # Bumped by every content change; part of every answer-cache key, so edits never serve stale answers.
    content_generation = models.PositiveBigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug


class FaqStatus(models.TextChoices):
    DRAFT = "draft", "Draft"
    PUBLISHED = "published", "Published"
    ARCHIVED = "archived", "Archived"


# Derived columns are rebuilt from the text, and the lock version must only ever grow, so revisions
# keep only what a person wrote.
@reversion.register(exclude=["search_vector", "content_hash", "version"])
class FaqEntry(models.Model):
    kb = models.ForeignKey(KnowledgeBase, on_delete=models.CASCADE, related_name="entries")
    external_id = models.CharField(max_length=200, null=True, blank=True,
                                   help_text="Identifier in the source system; imports upsert by it.")
    question = models.TextField()
    answer = models.TextField(blank=True)
    summary = models.TextField(blank=True, help_text="Engineer-style summary: the customer's words in system terms.")
    # 相似问: other ways customers ask the same thing. Each is embedded on its own (an entry's vector
    # score is its best-matching phrasing) and all of them are full-text indexed.
    similar_questions = ArrayField(models.TextField(), default=list, blank=True,
                                   help_text="Alternate phrasings of the question, one per item.")
    tags = ArrayField(models.CharField(max_length=64), default=list, blank=True)
    category = models.CharField(max_length=200, blank=True)
    language = models.CharField(max_length=16, blank=True)
    status = models.CharField(max_length=16, choices=FaqStatus.choices, default=FaqStatus.PUBLISHED)
    # Optimistic lock: every write names the version it read; a mismatch is a conflict.
    version = models.PositiveIntegerField(default=1)
    search_vector = SearchVectorField(null=True, editable=False)
    content_hash = models.CharField(max_length=64, blank=True, editable=False)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    updated_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]
        verbose_name = "FAQ entry"
        verbose_name_plural = "FAQ entries"
        constraints = [
            models.UniqueConstraint(fields=["kb", "external_id"], name="faq_external_id_unique_per_kb",
                                    condition=models.Q(external_id__isnull=False)),
        ]
        indexes = [
            GinIndex(fields=["tags"], name="faq_tags_gin"),
            models.Index(fields=["kb", "status"], name="faq_kb_status"),
        ]

    def __str__(self) -> str:
        return self.question[:80]


class FaqEmbedding(models.Model):
    """One vector of one phrasing of one entry, tagged with the model and dimension that made it.

    The column has no fixed dimension so that knowledge bases may use different models; each
    dimension in use gets its own partial HNSW index (see ``knowledge.vector_index``)."""

    entry = models.ForeignKey(FaqEntry, on_delete=models.CASCADE, related_name="embeddings")
    kb = models.ForeignKey(KnowledgeBase, on_delete=models.CASCADE, related_name="+")
    # 0: the question with its summary (or answer); n: the entry's n-th similar question.
    phrasing = models.PositiveSmallIntegerField(default=0)
    model = models.CharField(max_length=300)
    dimensions = models.PositiveIntegerField()
    content_hash = models.CharField(max_length=64)
    vector = VectorField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["entry", "model", "phrasing"], name="faq_embedding_one_per_phrasing"),
        ]
        indexes = [models.Index(fields=["kb", "model"], name="faq_embedding_kb_model")]

    def __str__(self) -> str:
        return f"{self.model} vector of entry {self.entry_id}"


class FaqPosting(models.Model):
    """One term of one published entry, for BM25: its field-weighted frequency and the entry's
    field-weighted length. Rows exist for published entries only (only those are searched)."""

    pk = models.CompositePrimaryKey("entry", "term")
    entry = models.ForeignKey(FaqEntry, on_delete=models.CASCADE, related_name="+")
    kb = models.ForeignKey(KnowledgeBase, on_delete=models.CASCADE, related_name="+")
    language = models.CharField(max_length=16)
    term = models.TextField()
    frequency = models.FloatField()
    entry_length = models.FloatField()

    class Meta:
        indexes = [
            # Index-only scans: a query's terms → their postings, without visiting the entries.
            models.Index(fields=["kb", "language", "term"], include=["entry", "frequency", "entry_length"],
                         name="faq_posting_term"),
        ]

    def __str__(self) -> str:
        return f"{self.term} in entry {self.entry_id}"


class FaqTermStat(models.Model):
    """How many published entries of a knowledge base, in one language, contain a term (BM25's
    document frequency). Kept by the writes themselves, in their transactions."""

    pk = models.CompositePrimaryKey("kb", "language", "term")
    kb = models.ForeignKey(KnowledgeBase, on_delete=models.CASCADE, related_name="+")
    language = models.CharField(max_length=16)
    term = models.TextField()
    entries = models.PositiveIntegerField()

    def __str__(self) -> str:
        return f"{self.term}: {self.entries} entries"


class FaqCorpusStat(models.Model):
    """Published entries of a knowledge base in one language, and their summed field-weighted length."""

    pk = models.CompositePrimaryKey("kb", "language")
    kb = models.ForeignKey(KnowledgeBase, on_delete=models.CASCADE, related_name="+")
    language = models.CharField(max_length=16)
    entries = models.PositiveIntegerField()
    total_length = models.FloatField()

    def __str__(self) -> str:
        return f"{self.kb_id}/{self.language}: {self.entries} entries"


class Calibration(models.Model):
    """What ``kb_calibrate`` measured for one knowledge base and the thresholds it chose from it.

    It belongs to what it measured: scores of another reranker engine or model, or of another
    embedding model's candidates, are not the scores it certified, so it no longer applies then."""

    kb = models.ForeignKey(KnowledgeBase, on_delete=models.CASCADE, related_name="calibrations")
    engine = models.CharField(max_length=64)
    model = models.CharField(max_length=300)
    embed_model = models.CharField(max_length=300)
    content_generation = models.PositiveBigIntegerField()
    published_entries = models.PositiveIntegerField()
    target_precision = models.FloatField()
    confidence = models.FloatField()
    # None: no cut-off could be certified, so the base does not auto-answer (it suggests).
    answer_threshold = models.FloatField(null=True, blank=True)
    suggest_threshold = models.FloatField()
    precision_bound = models.FloatField(null=True, blank=True,
                                        help_text="Clopper–Pearson lower bound at the threshold.")
    coverage = models.FloatField(help_text="Share of the evidence questions auto-answered at the threshold.")
    labels_needed = models.PositiveIntegerField(null=True, blank=True,
                                                help_text="When nothing was certified: about how many more labelled "
                                                          "questions would be.")
    # {source: {"questions", "answerable", "no_answer"}}, each source counted on its own.
    evidence = models.JSONField(default=dict)
    # [{"cutoff", "answered", "correct", "coverage", "precision", "lower_bound"}], strictest first.
    risk_coverage = models.JSONField(default=list)
    summary = models.JSONField(default=dict, help_text="Suggest share, no-answer hand-off rate, cut-offs tested.")
    # Evidence in more than one language: thresholds fitted and certified per language, {language:
    # {"answer_threshold", "suggest_threshold", "precision_bound", "coverage", "labels_needed", "questions"}}.
    # A reranker's scores need not mean the same in every language, so a question is decided by its
    # language's thresholds, and a language without evidence is not auto-answered. Empty: one language.
    by_language = models.JSONField(default=dict, blank=True)
    # Newest reviewed console feedback it used: scheduled re-calibration runs when newer has accumulated.
    feedback_until = models.PositiveBigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        indexes = [models.Index(fields=["kb", "-created_at"], name="calibration_kb_time")]

    def __str__(self) -> str:
        return f"Calibration of {self.kb_id} at {self.created_at:%Y-%m-%d %H:%M}"

    def applies_to(self, *, engine: str, model: str, embed_model: str) -> bool:
        return (self.engine, self.model, self.embed_model) == (engine, model, embed_model)

    @property
    def auto_answers(self) -> bool:
        """Whether any question can be auto-answered: some cut-off was certified (in some language)."""
        if self.by_language:
            return any(fitted["answer_threshold"] is not None for fitted in self.by_language.values())
        return self.answer_threshold is not None


class CaseExpect(models.TextChoices):
    ANSWER = "answer", "Auto-answered with the entry"
    SUGGEST = "suggest", "The entry among the suggestions"
    NO_ANSWER = "no_answer", "Not auto-answered"


class CaseSource(models.TextChoices):
    CONSOLE_FEEDBACK = "console_feedback", "Console: answer marked not helpful"
    CONSOLE_RESOLVED = "console_resolved", "Console: handed-off ticket resolved with an entry"
    UNANSWERED_QUEUE = "unanswered_queue", "Unanswered queue"
    ADMIN = "admin", "Admin"
    IMPORT = "import", "Imported file"
    API = "api", "API"


class RegressionCase(models.Model):
    """A question the knowledge base must keep handling as expected: every change is checked
    against the base's cases before it goes live (``chat.services.checks``)."""

    kb = models.ForeignKey(KnowledgeBase, on_delete=models.CASCADE, related_name="cases")
    question = models.TextField()
    # Near-identical wordings of one expectation are one case (knowledge.importing.normalize_question).
    normalized = models.TextField(editable=False)
    expect = models.CharField(max_length=16, choices=CaseExpect.choices)
    # The entry expected (answer, suggest); none for no_answer. Entries are archived, not deleted.
    entry = models.ForeignKey(FaqEntry, null=True, blank=True, on_delete=models.CASCADE, related_name="cases")
    source = models.CharField(max_length=32, choices=CaseSource.choices)
    source_ref = models.CharField(max_length=200, blank=True, help_text="The ticket, question or file it came from.")
    note = models.TextField(blank=True)
    # How many times the same case was added again (merged into this one).
    occurrences = models.PositiveIntegerField(default=1)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    retired_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["kb", "normalized", "expect", "entry"], nulls_distinct=False,
                                    name="regression_case_unique"),
            models.CheckConstraint(condition=models.Q(expect="no_answer", entry__isnull=True)
                                   | (~models.Q(expect="no_answer") & models.Q(entry__isnull=False)),
                                   name="regression_case_entry_matches_expect"),
        ]
        indexes = [models.Index(fields=["kb", "retired_at"], name="regression_case_kb_active")]

    def __str__(self) -> str:
        return f"{self.question[:60]} → {self.expect}"


class CaseCheck(models.Model):
    """One run of a knowledge base's cases: as it is (a run), or before and after a change (a check)."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    kb = models.ForeignKey(KnowledgeBase, on_delete=models.CASCADE, related_name="case_checks")
    trigger = models.CharField(max_length=200, help_text="What was checked, e.g. “edit of entry 12”.")
    # The change checked, as chat.services.checks.FaqChange.as_dict(); {} for a run of the base as it is.
    change = models.JSONField(default=dict, blank=True)
    entries = ArrayField(models.BigIntegerField(), default=list, blank=True, help_text="Entries the change touches.")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    cases = models.PositiveIntegerField(default=0)
    done = models.PositiveIntegerField(default=0, help_text="Case scorings done (progress).")
    passed_before = models.PositiveIntegerField(default=0)
    passed_after = models.PositiveIntegerField(default=0)
    fixed = models.PositiveIntegerField(default=0)
    broken = models.PositiveIntegerField(default=0)
    # [{"case", "question", "expect", "entry", "before": {...}, "after": {...}, "outcome"}]
    results = models.JSONField(default=list, blank=True)
    error = models.TextField(blank=True)
    seconds = models.FloatField(null=True, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        indexes = [models.Index(fields=["kb", "-created_at"], name="case_check_kb_time")]

    def __str__(self) -> str:
        return f"Check of {self.kb_id}: {self.trigger}"


class RevisionCheck(models.Model):
    """What the case check said about the change a revision records, and any override of it
    (attached to the revision with ``reversion.add_meta``)."""

    revision = models.OneToOneField("reversion.Revision", on_delete=models.CASCADE, related_name="case_check")
    check_run = models.ForeignKey(CaseCheck, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    broken = models.PositiveIntegerField(default=0)
    fixed = models.PositiveIntegerField(default=0)
    forced = models.BooleanField(default=False, help_text="Written although it broke cases.")
    reason = models.TextField(blank=True)

    def __str__(self) -> str:
        return f"Check of revision {self.revision_id}"
