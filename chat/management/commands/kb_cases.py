"""`manage.py kb_cases import|export|run`: a knowledge base's regression cases from the command line."""

from __future__ import annotations

import json
import sys
from io import StringIO
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from rich.console import Console
from rich.table import Table
from tqdm import tqdm

from chat.services.checks import CheckUnavailable, case_check_summary, faq_change_check
from knowledge.cases.selectors import regression_cases_active
from knowledge.cases.services import regression_case_export_row, regression_cases_import, regression_cases_parse
from knowledge.models import KnowledgeBase


def _read_jsonl(path: Path) -> list[tuple[int, Any]]:
    """Numbered decoded lines; a line that is not JSON becomes its error message (reported with the rest)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise CommandError(f"Cannot read {path}: {error}") from error
    rows: list[tuple[int, Any]] = []
    for number, line in enumerate(lines, start=1):
        if line.strip():
            try:
                rows.append((number, json.loads(line)))
            except json.JSONDecodeError as error:
                rows.append((number, f"not JSON ({error.msg})"))
    return rows


class Command(BaseCommand):
    help = ("Regression cases of a knowledge base. import FILE.jsonl: kb_eval's lines ({query, relevant_ids}) plus "
            "expect (answer | suggest | no_answer) and note; all or nothing. export: the same format on stdout. "
            "run: score every case, print a table, exit 1 if any fails (--json for machines).")

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True)
        imported = actions.add_parser("import")
        imported.add_argument("file", type=Path)
        exported = actions.add_parser("export")
        run = actions.add_parser("run")
        run.add_argument("--json", action="store_true")
        for sub in (imported, exported, run):
            sub.add_argument("--kb", required=True)

    def handle(self, *args: Any, **options: Any) -> None:
        kb = KnowledgeBase.objects.filter(slug=options["kb"]).first()
        if kb is None:
            raise CommandError(f"No knowledge base with slug {options['kb']!r}.")
        getattr(self, f"_{options['action']}")(kb, options)

    def _import(self, kb: KnowledgeBase, options: dict[str, Any]) -> None:
        rows = _read_jsonl(options["file"])
        if not rows:
            raise CommandError(f"{options['file']} has no cases; nothing was written.")
        bad_json = [f"line {number}: {row}" for number, row in rows if isinstance(row, str)]
        parsed = regression_cases_parse(kb=kb, rows=[(n, row) for n, row in rows if not isinstance(row, str)])
        parsed.errors = sorted([*bad_json, *parsed.errors], key=lambda text: int(text.split()[1].rstrip(":")))
        result = regression_cases_import(kb=kb, parsed=parsed, source_ref=options["file"].name)
        if result.errors:
            for error in result.errors:
                self.stderr.write(f"{options['file']}: {error}")
            raise CommandError(f"{len(result.errors)} bad line(s); nothing was written.")
        self.stdout.write(f"{result.created} cases added, {result.merged} merged into existing ones.")

    def _export(self, kb: KnowledgeBase, options: dict[str, Any]) -> None:
        for case in regression_cases_active(kb=kb):
            self.stdout.write(json.dumps(regression_case_export_row(case), ensure_ascii=False))

    def _run(self, kb: KnowledgeBase, options: dict[str, Any]) -> None:
        total = regression_cases_active(kb=kb).count()
        if not total:
            raise CommandError(f"{kb.slug} has no regression cases (kb_cases import adds some).")
        try:
            with tqdm(total=total, desc="cases", disable=None, file=sys.stderr) as bar:
                check = faq_change_check(kb=kb, trigger="kb_cases run", progress=bar.update)
        except CheckUnavailable as error:
            raise CommandError(str(error)) from error
        summary = case_check_summary(check)
        failed = check.cases - check.passed_after
        if options["json"]:
            self.stdout.write(json.dumps({**summary, "failed": failed}, ensure_ascii=False, indent=2))
        else:
            self._table(summary)
        if failed:
            sys.exit(1)

    def _table(self, summary: dict[str, Any]) -> None:
        table = Table(title=f"{summary['cases']} cases, {summary['passed_after']} pass")
        for column in ("case", "question", "expect", "entry", "decision", "top entry", "score", "result"):
            table.add_column(column)
        for row in sorted(summary["results"], key=lambda item: (item["after"]["passed"], item["case"])):
            after = row["after"]
            table.add_row(str(row["case"]), row["question"][:40], row["expect"], str(row["entry"] or "-"),
                          after["decision"], str(after["top_entry"] or "-"),
                          "-" if after["score"] is None else f"{after['score']:.3f}",
                          "pass" if after["passed"] else "FAIL")
        console = Console(width=140, record=True, file=StringIO())
        console.print(table)
        self.stdout.write(console.export_text())
