"""Every write to knowledge bases and FAQ entries goes through here (revisions, locking, indexing)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import reversion
from django.conf import settings
from django.contrib.auth.models import AnonymousUser, User
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.db.models import Exists, F, OuterRef
from reversion.models import Version

from knowledge import bm25
from knowledge import text as kb_text
from knowledge.embedding import default_model_name, get_embedder
from knowledge.models import Calibration, FaqEmbedding, FaqEntry, FaqStatus, KnowledgeBase, RevisionCheck
from knowledge.vector_index import ensure_vector_index

logger = logging.getLogger(__name__)

EDITABLE_FIELDS = ("external_id", "question", "similar_questions", "answer", "summary", "tags", "category",
                   "language", "status")
# Real FAQs carry a handful to a few dozen phrasings per entry; each is embedded on its own.
MAX_SIMILAR_QUESTIONS = 100
MAX_SIMILAR_QUESTIONS_CHARS = 8000
MAX_TAGS = 50
MAX_TAG_CHARS = 64
CATEGORY_CHARS = 200
EXTERNAL_ID_CHARS = 200
EXTERNAL_ID_CONSTRAINT = "faq_external_id_unique_per_kb"
LANGUAGE_CHOICES = (("zh", "Chinese (zh)"), ("en", "English (en)"))
LANGUAGE_CODES = {code for code, _ in LANGUAGE_CHOICES}


# Who makes a change: a signed-in user, or nobody (imports and scripts run as nobody unless told).
Actor = User | AnonymousUser | None


def _user(actor: Actor) -> User | None:
    return actor if isinstance(actor, User) else None


class FaqEntryConflict(Exception):
    """Someone else saved the entry since the caller read it (optimistic lock)."""

    def __init__(self, *, entry_id: int, expected_version: int, current_version: int) -> None:
        super().__init__(
            f"FAQ entry {entry_id} was changed by someone else (you edited version {expected_version}, "
            f"it is now at version {current_version}); reload it and apply your change again."
        )
        self.entry_id = entry_id
        self.expected_version = expected_version
        self.current_version = current_version


@contextmanager
def _external_id_unique() -> Iterator[None]:
    """A write that would give two entries of one knowledge base the same external id is refused
    by the database's constraint (no check-then-write race); it reaches callers as a field error."""
    try:
        with transaction.atomic():  # a savepoint: the caller's transaction stays usable
            yield
    except IntegrityError as error:
        if getattr(getattr(error.__cause__, "diag", None), "constraint_name", None) != EXTERNAL_ID_CONSTRAINT:
            raise
        raise ValidationError({"external_id": ["another entry of this knowledge base has this external id"]}) from error


def _check_text(errors: dict[str, list[str]], field: str, value: str, *, limit: int, required: bool) -> str:
    if kb_text.strip_control_characters(value) != value:
        errors.setdefault(field, []).append("contains control characters")
    if "\ufffd" in value:
        errors.setdefault(field, []).append("contains undecodable bytes (is the file UTF-8 or GBK?)")
    value = value.strip()
    if required and not value:
        errors.setdefault(field, []).append("must not be empty")
    if len(value) > limit:
        errors.setdefault(field, []).append(f"is {len(value)} characters long; the limit is {limit}")
    return value


def faq_entry_clean(*, data: dict[str, Any]) -> dict[str, Any]:
    """Validate and normalise entry fields; raises ValidationError with every problem by field."""
    errors: dict[str, list[str]] = {}
    cleaned: dict[str, Any] = {}
    limits = {"question": settings.KB_MAX_QUESTION_CHARS, "answer": settings.KB_MAX_ANSWER_CHARS,
              "summary": settings.KB_MAX_SUMMARY_CHARS, "category": CATEGORY_CHARS,
              "external_id": EXTERNAL_ID_CHARS}
    for field, limit in limits.items():
        if field not in data:
            continue
        raw = data[field]
        if raw is None:
            raw = ""
        if not isinstance(raw, str):
            errors.setdefault(field, []).append("must be text")
            continue
        cleaned[field] = _check_text(errors, field, raw, limit=limit, required=field == "question")
    if "external_id" in cleaned:
        cleaned["external_id"] = cleaned["external_id"] or None
    if "similar_questions" in data:
        cleaned["similar_questions"] = _clean_similar_questions(errors, data["similar_questions"])
    if "tags" in data:
        cleaned["tags"] = _clean_tags(errors, data["tags"])
    if "language" in data:
        language = (data["language"] or "").strip().lower()
        if language and language not in LANGUAGE_CODES:
            errors.setdefault("language", []).append(f"must be one of {sorted(LANGUAGE_CODES)} or empty")
        cleaned["language"] = language
    if "status" in data:
        status = (data["status"] or FaqStatus.PUBLISHED).strip().lower()
        if status not in FaqStatus.values:
            errors.setdefault("status", []).append(f"must be one of {FaqStatus.values}")
        cleaned["status"] = status
    if errors:
        raise ValidationError(errors)
    return cleaned


def _clean_similar_questions(errors: dict[str, list[str]], raw: Any) -> list[str]:
    """A list of text, or one text (a spreadsheet cell) with a phrasing per line, or, on one line,
    phrasings separated by "|"."""
    field = "similar_questions"
    if raw is None:
        return []
    if isinstance(raw, str):
        raw = raw.split("\n") if "\n" in raw else raw.split("|")
    if not isinstance(raw, list | tuple) or not all(isinstance(item, str) for item in raw):
        errors.setdefault(field, []).append("must be a list of text, or text with one phrasing per line")
        return []
    phrasings: list[str] = []
    for number, item in enumerate(raw, start=1):
        problems: dict[str, list[str]] = {}
        phrasing = _check_text(problems, field, item, limit=settings.KB_MAX_QUESTION_CHARS, required=False)
        for problem in problems.get(field, []):
            errors.setdefault(field, []).append(f"phrasing {number} {problem}")
        if phrasing:
            phrasings.append(phrasing)
    phrasings = list(dict.fromkeys(phrasings))
    if len(phrasings) > MAX_SIMILAR_QUESTIONS:
        errors.setdefault(field, []).append(f"has {len(phrasings)} phrasings; the limit is {MAX_SIMILAR_QUESTIONS}")
    total = sum(len(phrasing) for phrasing in phrasings)
    if total > MAX_SIMILAR_QUESTIONS_CHARS:
        errors.setdefault(field, []).append(
            f"are {total} characters in all; the limit is {MAX_SIMILAR_QUESTIONS_CHARS}")
    return phrasings


def _clean_tags(errors: dict[str, list[str]], raw: Any) -> list[str]:
    if isinstance(raw, str):
        raw = raw.replace("，", ",").replace(";", ",").split(",")
    if not isinstance(raw, list | tuple) or not all(isinstance(tag, str) for tag in raw):
        errors.setdefault("tags", []).append("must be a list of text or a comma-separated text")
        return []
    tags = list(dict.fromkeys(tag.strip() for tag in raw if tag.strip()))
    if len(tags) > MAX_TAGS:
        errors.setdefault("tags", []).append(f"at most {MAX_TAGS} tags")
    if any(len(tag) > MAX_TAG_CHARS for tag in tags):
        errors.setdefault("tags", []).append(f"a tag has at most {MAX_TAG_CHARS} characters")
    return tags


def knowledge_base_create(
    *, slug: str, name: str = "", languages: Sequence[str] = ("zh", "en"), description: str = "",
    embed_model: str | None = None,
) -> KnowledgeBase:
    model = embed_model or default_model_name()
    embedder = get_embedder(model)
    kb = KnowledgeBase(slug=slug, name=name or slug, languages=list(languages), description=description,
                       embed_model=model, embed_dimensions=embedder.dimensions)
    kb.full_clean()
    kb.save()
    return kb


def knowledge_base_get_or_create(*, slug: str, language: str | None = None) -> tuple[KnowledgeBase, bool]:
    kb = KnowledgeBase.objects.filter(slug=slug).first()
    if kb is not None:
        return kb, False
    return knowledge_base_create(slug=slug, languages=[language] if language else ["zh", "en"]), True


# Knowledge bases whose generation this block already bumped, inside ``faq_writes_batched()``.
_generation_bumped: ContextVar[set[int] | None] = ContextVar("generation_bumped", default=None)


def _knowledge_base_bump_generation(kb_id: int) -> None:
    bumped = _generation_bumped.get()
    if bumped is not None and kb_id in bumped:
        return  # this transaction already holds the row lock and a new generation
    KnowledgeBase.objects.filter(pk=kb_id).update(content_generation=F("content_generation") + 1)
    if bumped is not None:
        bumped.add(kb_id)


@contextmanager
def faq_writes_batched() -> Iterator[None]:
    """For many entry writes in one transaction (imports): the content generation bumped once per
    knowledge base, BM25 postings refreshed and embeddings queued once at the end. Every update of
    one row inside a transaction leaves a row version that later reads of the row walk (foreign-key
    checks of every new posting among them), so one bump per entry made large imports quadratic."""
    token = _generation_bumped.set(set()) if _generation_bumped.get() is None else None
    try:
        with faq_embeddings_batched(), bm25.faq_postings_batched():
            yield
    finally:
        if token is not None:
            _generation_bumped.reset(token)


def _faq_entry_embedding_texts(entry: FaqEntry) -> list[str]:
    return kb_text.embedding_texts(question=entry.question, summary=entry.summary, answer=entry.answer,
                                   similar_questions=entry.similar_questions)


def _faq_entry_reindex(entry: FaqEntry) -> None:
    """Refresh the full-text column, its BM25 postings and the content hash; queue the embedding after commit."""
    sql, params = bm25.search_vector_sql(question=entry.question, similar_questions=entry.similar_questions,
                                         summary=entry.summary, answer=entry.answer)
    new_hash = kb_text.embedding_hash(_faq_entry_embedding_texts(entry))
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE knowledge_faqentry SET search_vector = {sql}, content_hash = %s WHERE id = %s",
            [*params, new_hash, entry.pk],
        )
    entry.content_hash = new_hash
    # First: the knowledge base's row lock serialises the statistics' writers (knowledge.bm25).
    _knowledge_base_bump_generation(entry.kb_id)
    bm25.faq_entry_postings_refresh(entry_id=entry.pk)
    _embed_after_commit([entry.pk])


# The entries written inside ``faq_embeddings_batched()`` (None outside it).
_embedding_batch: ContextVar[list[int] | None] = ContextVar("embedding_batch", default=None)


def _embed_after_commit(entry_ids: list[int]) -> None:
    batch = _embedding_batch.get()
    if batch is not None:
        batch.extend(entry_ids)
    else:
        transaction.on_commit(lambda: _enqueue_embedding(entry_ids))


@contextmanager
def faq_embeddings_batched() -> Iterator[None]:
    """Queue the embeddings of the entries written inside as tasks of KB_EMBED_BATCH entries, after
    commit, rather than one task per entry: the worker embeds a batch in one model call and one
    write. A block left by an exception queues nothing (its transaction rolls back). Nested uses
    join the outermost one."""
    if _embedding_batch.get() is not None:
        yield
        return
    entry_ids: list[int] = []
    token = _embedding_batch.set(entry_ids)
    try:
        yield
    finally:
        _embedding_batch.reset(token)
    transaction.on_commit(lambda: _enqueue_embedding(entry_ids))


def faq_entries_queue_missing_embeddings(*, kb: KnowledgeBase, entry_ids: Iterable[int]) -> int:
    """Queue, after commit, the embedding of those of ``entry_ids`` that have no vector of their
    current text (for ``kb``'s model). Returns how many were queued."""
    wanted = set(entry_ids)
    fresh = FaqEmbedding.objects.filter(entry=OuterRef("pk"), model=kb.embed_model, phrasing=0,
                                        content_hash=OuterRef("content_hash"))
    # Usually few entries of a knowledge base lack a vector: look those up rather than send every id.
    missing = [pk for pk in FaqEntry.objects.filter(kb=kb).filter(~Exists(fresh)).values_list("pk", flat=True)
               if pk in wanted]
    if missing:
        _embed_after_commit(missing)
    return len(missing)


def _enqueue_embedding(entry_ids: list[int]) -> None:
    from knowledge.tasks import faq_entries_embed_task

    entry_ids = list(dict.fromkeys(entry_ids))
    for start in range(0, len(entry_ids), settings.KB_EMBED_BATCH):
        batch = entry_ids[start:start + settings.KB_EMBED_BATCH]
        try:
            faq_entries_embed_task.apply_async(kwargs={"entry_ids": batch}, queue=settings.KB_EMBED_QUEUE)
        except Exception:  # the broker is down: the entries are saved; `kb_reembed --missing` catches up
            logger.warning("could not queue embedding", extra={"entry_ids": entry_ids[start:]}, exc_info=True)
            return


CHECK_NOTE = " — "  # separates a revision's comment from the case check's verdict
# What the case check said about the writes inside ``faq_revisions_checked()`` (None outside it).
_revision_check: ContextVar[dict[str, Any] | None] = ContextVar("revision_check", default=None)


@contextmanager
def faq_revisions_checked(*, check_id: int | None, broken: int, fixed: int, forced: bool,
                          reason: str = "") -> Iterator[None]:
    """Record on every revision written inside the block what the case check found and whether it
    was overridden (``RevisionCheck``), so an entry's history shows who published anyway and why."""
    token = _revision_check.set({"check_run_id": check_id, "broken": broken, "fixed": fixed, "forced": forced,
                                 "reason": reason})
    try:
        yield
    finally:
        _revision_check.reset(token)


def _revision_describe(*, user: User | None, comment: str) -> None:
    """Inside a ``reversion.create_revision()`` block: who, why, and the case check's verdict."""
    reversion.set_user(user)
    check = _revision_check.get()
    if check is not None:
        reversion.add_meta(RevisionCheck, **check)
        if check["forced"]:
            comment = f"{comment}{CHECK_NOTE}published anyway, {check['broken']} case(s) broken: {check['reason']}"
        elif check["check_run_id"] is not None:
            comment = f"{comment}{CHECK_NOTE}case check: {check['fixed']} fixed, none broken"
    reversion.set_comment(comment)


@transaction.atomic
def faq_entry_create(
    *, kb: KnowledgeBase, data: dict[str, Any], created_by: Actor = None,
    comment: str = "Created",
) -> FaqEntry:
    cleaned = faq_entry_clean(data={"status": FaqStatus.PUBLISHED, **data})
    user = _user(created_by)
    with reversion.create_revision():
        with _external_id_unique():
            entry = FaqEntry.objects.create(kb=kb, created_by=user, updated_by=user, **cleaned)
        _revision_describe(user=user, comment=comment)
    _faq_entry_reindex(entry)
    return entry


@transaction.atomic
def faq_entry_update(
    *, entry_id: int, expected_version: int, data: dict[str, Any], edited_by: Actor = None,
    comment: str = "Edited",
) -> FaqEntry:
    """Apply ``data`` if the entry is still at ``expected_version``; otherwise raise FaqEntryConflict.

    Takes a row lock, so two writers holding the same version are serialised and the second
    one sees the bumped version: exactly one of them wins."""
    entry = FaqEntry.objects.select_for_update().get(pk=entry_id)
    if entry.version != expected_version:
        raise FaqEntryConflict(entry_id=entry_id, expected_version=expected_version,
                               current_version=entry.version)
    cleaned = faq_entry_clean(data={field: value for field, value in data.items() if field in EDITABLE_FIELDS})
    changed = {field: value for field, value in cleaned.items() if getattr(entry, field) != value}
    if not changed:
        return entry
    for field, value in changed.items():
        setattr(entry, field, value)
    user = _user(edited_by)
    entry.version += 1
    entry.updated_by = user
    with reversion.create_revision():
        with _external_id_unique():
            entry.save()
        _revision_describe(user=user, comment=comment)
    _faq_entry_reindex(entry)
    return entry


def faq_entry_rollback(
    *, entry_id: int, version_id: int, edited_by: Actor = None,
) -> FaqEntry:
    """Bring an entry back to an earlier revision; the rollback is itself a new revision."""
    old = Version.objects.get_for_model(FaqEntry).get(pk=version_id, object_id=str(entry_id))
    current = FaqEntry.objects.get(pk=entry_id)
    fields = {field: old.field_dict[field] for field in EDITABLE_FIELDS if field in old.field_dict}
    return faq_entry_update(entry_id=entry_id, expected_version=current.version, data=fields,
                            edited_by=edited_by, comment=f"Rolled back to revision {old.revision_id}")


def faq_entries_set_status(
    *, entry_ids: Iterable[int], status: str, edited_by: Actor = None,
) -> int:
    """Publish or archive several entries, one revision each. Returns how many changed."""
    changed = 0
    for entry in FaqEntry.objects.filter(pk__in=list(entry_ids)).exclude(status=status).only("id", "version"):
        faq_entry_update(entry_id=entry.pk, expected_version=entry.version, data={"status": status},
                         edited_by=edited_by, comment=f"Status set to {status}")
        changed += 1
    return changed


@transaction.atomic
def faq_entry_delete(*, entry: FaqEntry, deleted_by: Actor = None) -> None:
    _knowledge_base_bump_generation(entry.kb_id)
    bm25.faq_entry_postings_remove(entry_id=entry.pk)
    entry.delete()  # reversion keeps the deleted entry's revisions: the admin can recover it


def faq_entries_embed(*, entry_ids: Sequence[int], model: str | None = None) -> int:
    """Embed entries whose stored vectors (for ``model``, default: their knowledge base's) are stale:
    every phrasing of an entry in one model call, written together.

    The model runs outside any lock; the write then re-checks each entry's content hash under a
    row lock, so vectors computed from text that was edited meanwhile are never stored over
    fresher ones. Returns the number of entries whose vectors were written."""
    entries = list(FaqEntry.objects.filter(pk__in=entry_ids).select_related("kb"))
    written = 0
    by_model: dict[str, list[FaqEntry]] = {}
    for entry in entries:
        for name in {model} if model else {entry.kb.embed_model, entry.kb.pending_embed_model} - {""}:
            by_model.setdefault(name, []).append(entry)
    for name, group in by_model.items():
        stored = _stored_hashes(group, name)
        todo = [entry for entry in group if stored.get(entry.pk) != entry.content_hash]
        if not todo:
            continue
        embedder = get_embedder(name)
        texts = {entry.pk: _faq_entry_embedding_texts(entry) for entry in todo}
        vectors = iter(embedder.embed_passages([text for entry in todo for text in texts[entry.pk]]))
        by_entry = {entry.pk: [next(vectors) for _ in texts[entry.pk]] for entry in todo}
        ensure_vector_index(embedder.dimensions)
        with transaction.atomic():
            current = dict(
                FaqEntry.objects.select_for_update().filter(pk__in=[e.pk for e in todo])
                .values_list("id", "content_hash")
            )
            # Under the lock: another worker may have stored these very vectors meanwhile.
            stored = _stored_hashes(todo, name)
            due = [e for e in todo if current.get(e.pk) == e.content_hash and stored.get(e.pk) != e.content_hash]
            rows = [
                FaqEmbedding(entry_id=e.pk, kb_id=e.kb_id, model=name, phrasing=phrasing,
                             dimensions=embedder.dimensions, content_hash=e.content_hash, vector=vector.tolist())
                for e in due for phrasing, vector in enumerate(by_entry[e.pk])
            ]
            FaqEmbedding.objects.bulk_create(
                rows, update_conflicts=True, unique_fields=["entry", "model", "phrasing"],
                update_fields=["vector", "dimensions", "content_hash", "created_at"],
            )
            with connection.cursor() as cursor:  # phrasings the entries no longer have
                cursor.execute(
                    "DELETE FROM knowledge_faqembedding m USING unnest(%s::bigint[], %s::int[]) AS d(entry_id, n) "
                    "WHERE m.entry_id = d.entry_id AND m.model = %s AND m.phrasing >= d.n",
                    [[e.pk for e in due], [len(by_entry[e.pk]) for e in due], name],
                )
            written += len(due)
    return written


def _stored_hashes(entries: Sequence[FaqEntry], model: str) -> dict[int, str]:
    # An entry's phrasings are always written together: its first one stands for all.
    return dict(FaqEmbedding.objects.filter(entry__in=entries, model=model, phrasing=0)
                .values_list("entry_id", "content_hash"))


def knowledge_base_switch_embed_model(*, kb: KnowledgeBase, model: str) -> None:
    """Make ``model`` the one queries use, once its vectors are complete; drop the old vectors."""
    embedder = get_embedder(model)
    with transaction.atomic():
        old = kb.embed_model
        KnowledgeBase.objects.filter(pk=kb.pk).update(
            embed_model=model, embed_dimensions=embedder.dimensions, pending_embed_model="",
            content_generation=F("content_generation") + 1,
        )
        if old != model:
            FaqEmbedding.objects.filter(kb=kb, model=old).delete()
    kb.refresh_from_db()


def knowledge_base_set_pending_embed_model(*, kb: KnowledgeBase, model: str) -> None:
    """Start moving ``kb`` to another embedding model; queries keep using the current one until
    ``knowledge_base_switch_embed_model``. Loads the model first, so a bad name fails before any work."""
    get_embedder(model)
    KnowledgeBase.objects.filter(pk=kb.pk).update(pending_embed_model=model)
    kb.pending_embed_model = model


def faq_embeddings_mark_stale(*, kb: KnowledgeBase, model: str) -> int:
    """Make every ``model`` vector of ``kb`` due for re-embedding without deleting it: search keeps
    using each old vector until its replacement is written. Returns how many were marked."""
    return FaqEmbedding.objects.filter(kb=kb, model=model).update(content_hash="")


@transaction.atomic
def knowledge_base_calibration_record(*, kb_id: int, engine: str, model: str, **measured: Any) -> Calibration:
    """Record a calibration of what the base is now (content generation, published entries, embedding
    model) and put it in force. Answers cached under the previous one are not served again: the
    calibration in force is part of every answer-cache key."""
    kb = KnowledgeBase.objects.select_for_update().get(pk=kb_id)
    calibration = Calibration.objects.create(
        kb=kb, engine=engine, model=model, embed_model=kb.embed_model, content_generation=kb.content_generation,
        published_entries=FaqEntry.objects.filter(kb=kb, status=FaqStatus.PUBLISHED).count(), **measured)
    KnowledgeBase.objects.filter(pk=kb.pk).update(calibration=calibration)
    return calibration
