"""`manage.py kb_export --kb acme --output faq.xlsx`: every entry, in a format `kb_import` reads back."""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from knowledge.exporting import faq_entries_export
from knowledge.importing import FORMATS, tqdm_progress
from knowledge.importing.reading import EXTENSIONS
from knowledge.models import KnowledgeBase


def knowledge_base_or_error(slug: str) -> KnowledgeBase:
    kb = KnowledgeBase.objects.filter(slug=slug).first()
    if kb is None:
        known = ", ".join(KnowledgeBase.objects.values_list("slug", flat=True)[:20]) or "none yet"
        raise CommandError(f"No knowledge base {slug!r} (existing: {known}).")
    return kb


class Command(BaseCommand):
    help = "Export a knowledge base's FAQ entries as CSV (UTF-8 with BOM, for Excel), XLSX, JSON, JSONL or text."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--kb", required=True, help="Slug of the knowledge base.")
        parser.add_argument("--format", dest="file_format", choices=["auto", *FORMATS], default="auto",
                            help="Default: from the output's extension; JSONL on standard output.")
        parser.add_argument("--output", "-o", default="-", help="File to write, or - for standard output.")

    def handle(self, *args: Any, kb: str, file_format: str, output: str, **options: Any) -> None:
        knowledge_base = knowledge_base_or_error(kb)
        if file_format == "auto":
            suffix = Path(output).suffix.lower()
            if output != "-" and suffix not in EXTENSIONS:
                raise CommandError(f"Cannot tell the format from {output!r}; pass --format.")
            file_format = EXTENSIONS.get(suffix, "jsonl") if output != "-" else "jsonl"
        if output == "-":
            self._to_stdout(knowledge_base, file_format)
            return
        target = Path(output)
        if not target.parent.is_dir():
            raise CommandError(f"No such directory: {target.parent}")
        # Write beside the target and rename: an interrupted export never leaves a truncated file.
        handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
        try:
            with os.fdopen(handle, "wb") as stream:
                count = faq_entries_export(kb=knowledge_base, file_format=file_format, stream=stream,
                                           progress=tqdm_progress)
            os.chmod(temporary, 0o644)  # mkstemp makes it private; an export is an ordinary file
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        self.stdout.write(f"Exported {count} entries of {kb!r} to {target} ({file_format}).")

    def _to_stdout(self, kb: KnowledgeBase, file_format: str) -> None:
        if file_format == "xlsx":
            binary = getattr(self.stdout, "buffer", None)
            if binary is None:
                raise CommandError("XLSX is binary: write it to a file with --output.")
            faq_entries_export(kb=kb, file_format=file_format, stream=binary)
            binary.flush()
            return
        buffer = io.BytesIO()
        faq_entries_export(kb=kb, file_format=file_format, stream=buffer)
        self.stdout.write(buffer.getvalue().decode("utf-8"), ending="")
