"""`manage.py kb_load_demo`: the demo knowledge base, loaded and embedded, ready to search. Idempotent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from knowledge.importing import faq_entries_import, tqdm_progress
from knowledge.management.commands.kb_import import read_input
from knowledge.management.commands.kb_reembed import embed_needing
from knowledge.models import KnowledgeBase
from knowledge.services import knowledge_base_create

DEMO_FILE = Path(__file__).resolve().parents[2] / "data" / "demo_faq.jsonl"
DEMO_SLUG = "demo"
DEMO_NAME = "Demo support desk"
DEMO_LANGUAGES = ("zh", "en")


class Command(BaseCommand):
    help = (f"Load {DEMO_FILE.name} into the knowledge base {DEMO_SLUG!r} through the normal import, then embed "
            "it so it is searchable at once. Running it again changes nothing.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--file", default=str(DEMO_FILE), help="Load this file instead of the bundled demo.")

    def handle(self, *args: Any, file: str, **options: Any) -> None:
        content, name = read_input(file)
        with transaction.atomic():
            kb = KnowledgeBase.objects.filter(slug=DEMO_SLUG).first() or knowledge_base_create(
                slug=DEMO_SLUG, name=DEMO_NAME, languages=DEMO_LANGUAGES)
            report = faq_entries_import(kb=kb, content=content, filename=name, progress=tqdm_progress)
            if not report.written:
                transaction.set_rollback(True)
        if not report.ok:
            self.stdout.write(report.render_text())
            raise CommandError(f"The demo file {file} has problems (listed above); nothing was loaded.")
        # Synchronously, rather than waiting for the worker: the demo must answer when this returns.
        embedded = embed_needing(kb=kb, model=kb.embed_model)
        counts = report.counts
        self.stdout.write(self.style.SUCCESS(
            f"Demo knowledge base {DEMO_SLUG!r}: {counts['create']} created, {counts['update']} updated, "
            f"{counts['skip']} unchanged; {embedded} embedded."))
