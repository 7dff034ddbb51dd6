from __future__ import annotations

import json
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from chat.services.ask import AskParams, ask, question_clean
from knowledge.models import KnowledgeBase
from knowledge.selectors import SearchFilters


class Command(BaseCommand):
    help = "Ask a knowledge base a question; prints the same JSON as POST /api/v1/ask."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("question")
        parser.add_argument("--kb", required=True, help="knowledge base slug")
        parser.add_argument("--instruction", default="")
        parser.add_argument("--top-n", type=int)
        parser.add_argument("--tag", action="append", default=[], help="only entries with this tag (repeatable)")
        parser.add_argument("--category", default="")
        parser.add_argument("--language", default="")

    def handle(self, *args: Any, **options: Any) -> None:
        kb = KnowledgeBase.objects.filter(slug=options["kb"]).first()
        if kb is None:
            raise CommandError(f"No knowledge base with slug {options['kb']!r}.")
        try:
            question = question_clean(text=options["question"])
        except ValidationError as error:
            raise CommandError(f"question: {' '.join(error.message_dict['question'])}") from error
        if options["top_n"] is not None and not 1 <= options["top_n"] <= 20:
            raise CommandError("--top-n must be between 1 and 20")
        params = AskParams(
            question=question, instruction=options["instruction"], top_n=options["top_n"],
            filters=SearchFilters(tags=tuple(options["tag"]), category=options["category"],
                                  language=options["language"]),
        )
        result = ask(kb=kb, params=params, channel="cli")
        self.stdout.write(json.dumps(result, ensure_ascii=False, indent=2, default=str))
