from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from chat.services.ask import faq_rerank_document
from knowledge.models import KnowledgeBase
from knowledge.selectors import faq_entries_published
from rerank.batching import RerankRequest
from rerank.services import rerank_score

CHUNK = 32


class Command(BaseCommand):
    help = ("Send every published entry of a knowledge base through the rerank workers once, so engines that "
            "cache per-document work (the lite engine) answer the first real questions within KB_RERANK_TIMEOUT.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--kb", required=True)
        parser.add_argument("--timeout", type=float, default=600)

    def handle(self, *args: Any, **options: Any) -> None:
        kb = KnowledgeBase.objects.filter(slug=options["kb"]).first()
        if kb is None:
            raise CommandError(f"No knowledge base with slug {options['kb']!r}.")
        entries = list(faq_entries_published(kb=kb).order_by("pk"))
        for start in tqdm(range(0, len(entries), CHUNK), desc="rerank warm-up", unit="chunk", disable=None):
            chunk = entries[start:start + CHUNK]
            outcome = rerank_score(
                requests=[RerankRequest(query=chunk[0].question, documents=[faq_rerank_document(e) for e in chunk],
                                        instruction=kb.rerank_instruction)],
                timeout=options["timeout"],
            )
            if outcome.status != "ok":
                raise CommandError(f"The rerank workers did not answer ({outcome.reason}).")
        self.stdout.write(f"Warmed the rerank workers with {len(entries)} entries of {kb.slug!r}.")
