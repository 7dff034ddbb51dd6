"""`manage.py kb_reembed --kb acme [--model NAME] [--missing]`: (re)compute vectors, optionally with another model."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from knowledge.management.commands.kb_export import knowledge_base_or_error
from knowledge.models import KnowledgeBase
from knowledge.selectors import faq_entries_needing_embedding, knowledge_base_embedding_status
from knowledge.services import (
    faq_embeddings_mark_stale,
    faq_entries_embed,
    knowledge_base_set_pending_embed_model,
    knowledge_base_switch_embed_model,
)

# Entries edited while a model switch runs need another pass; past this many, ask for a re-run.
SWITCH_PASSES = 3


def embed_needing(*, kb: KnowledgeBase, model: str) -> int:
    """Embed, in batches of KB_EMBED_BATCH, every entry whose ``model`` vector is missing or stale."""
    ids = list(faq_entries_needing_embedding(kb=kb, model=model).values_list("pk", flat=True))
    written = 0
    with tqdm(total=len(ids), desc=f"Embedding with {model}", unit="entry", disable=None) as bar:
        for start in range(0, len(ids), settings.KB_EMBED_BATCH):
            batch = ids[start:start + settings.KB_EMBED_BATCH]
            try:
                written += faq_entries_embed(entry_ids=batch, model=model)
            except Exception as error:  # e.g. the embedding server is down; batches done so far are kept
                raise CommandError(f"Embedding failed after {written} of {len(ids)} entries: {error}") from error
            bar.update(len(batch))
    return written


class Command(BaseCommand):
    help = ("Re-embed a knowledge base's entries (vectors keep serving meanwhile). --missing: only entries "
            "without an up-to-date vector. --model: embed everything with another model, then switch to it.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--kb", required=True, help="Slug of the knowledge base.")
        parser.add_argument("--model", default="", help="Embedding model to move the knowledge base to.")
        parser.add_argument("--missing", action="store_true",
                            help="Only entries whose vector is missing or older than their text.")

    def handle(self, *args: Any, kb: str, model: str, missing: bool, **options: Any) -> None:
        knowledge_base = knowledge_base_or_error(kb)
        old_model = knowledge_base.embed_model
        target = model or old_model
        switching = target != old_model
        if switching:
            try:
                knowledge_base_set_pending_embed_model(kb=knowledge_base, model=target)
            except Exception as error:  # unknown name, no network for a download, bad server URL
                raise CommandError(f"Cannot load embedding model {target!r}: {error}") from error
        if not missing:
            faq_embeddings_mark_stale(kb=knowledge_base, model=target)
        written = embed_needing(kb=knowledge_base, model=target)
        if switching:
            for _ in range(SWITCH_PASSES):
                if knowledge_base_embedding_status(kb=knowledge_base, model=target).complete:
                    break
                written += embed_needing(kb=knowledge_base, model=target)  # entries edited meanwhile
            status = knowledge_base_embedding_status(kb=knowledge_base, model=target)
            if not status.complete:
                raise CommandError(f"{status.entries - status.embedded} entries still lack a {target} vector "
                                   f"(edited meanwhile?); queries keep using {old_model}. Run the command again.")
            knowledge_base_switch_embed_model(kb=knowledge_base, model=target)
        self.stdout.write(f"Embedded {written} entries of {kb!r} with {target}.")
        if switching:
            self.stdout.write(self.style.SUCCESS(f"{kb!r} now searches with {target} (was {old_model})."))
