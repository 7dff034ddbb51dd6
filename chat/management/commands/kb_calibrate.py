"""`manage.py kb_calibrate --kb SLUG [--queries FILE.jsonl] [--target 0.9]`: choose the thresholds with a guarantee."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from chat.evaluation import EvaluationError, labelled_queries_read
from chat.services.calibration import CalibrationError, knowledge_base_calibrate, target_check
from knowledge.models import Calibration, KnowledgeBase
from knowledge.selectors import knowledge_base_calibration_state
from rerank.heartbeat import rerank_running


def _share(name: str) -> Any:
    def parse(raw: str) -> float:
        try:
            return target_check(target=float(raw), name=name)
        except (ValueError, CalibrationError) as exc:
            raise argparse.ArgumentTypeError(
                f"{raw!r} is not a {name}: give a number strictly between 0 and 1, e.g. 0.9") from exc
    return parse


class Command(BaseCommand):
    help = ("Calibrate a knowledge base: ask its evidence (labelled queries, its entries' similar questions, reviewed "
            "console feedback) through the real pipeline and choose the answer threshold as the most permissive "
            "cut-off whose Clopper-Pearson lower bound of precision meets the target (fixed-sequence testing), and "
            "the suggest threshold. With no usable evidence it changes nothing.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--kb", required=True)
        parser.add_argument("--queries", type=Path, help='JSONL of {"query", "relevant_ids"}; [] = no answer')
        parser.add_argument("--target", type=_share("target"), help="precision to certify (default: the base's)")
        parser.add_argument("--confidence", type=_share("confidence"), help="default: the base's (0.95)")
        parser.add_argument("--simulate-no-answer", action="store_true",
                            help="also ask each labelled query with its relevant entries left out, as a no-answer "
                                 "question")
        parser.add_argument("--no-feedback", action="store_true", help="leave reviewed console feedback out")
        parser.add_argument("--unless-calibrated", action="store_true",
                            help="do nothing when a calibration applies to the reranker now running and is not stale")

    def handle(self, *args: Any, **options: Any) -> None:
        kb = KnowledgeBase.objects.filter(slug=options["kb"]).first()
        if kb is None:
            raise CommandError(f"No knowledge base with slug {options['kb']!r}.")
        if options["unless_calibrated"]:
            state = knowledge_base_calibration_state(kb=kb, running=rerank_running())
            if state.status == "calibrated" and not state.stale:
                self.stdout.write(f"{kb.slug} is calibrated for the reranker now running; nothing to do.")
                return
        try:
            rows = labelled_queries_read(options["queries"]) if options["queries"] else []
        except EvaluationError as exc:
            raise CommandError(str(exc)) from exc
        with tqdm(desc="evidence questions", disable=None) as progress:
            try:
                calibration = knowledge_base_calibrate(
                    kb=kb, query_rows=rows, simulate_no_answer=options["simulate_no_answer"],
                    target=options["target"], confidence=options["confidence"],
                    use_feedback=not options["no_feedback"], progress=progress.update)
            except (CalibrationError, EvaluationError) as exc:
                raise CommandError(str(exc)) from exc
        result = {
            "kb": kb.slug, "engine": calibration.engine, "model": calibration.model,
            "target_precision": calibration.target_precision, "confidence": calibration.confidence,
            "answer_threshold": calibration.answer_threshold, "suggest_threshold": calibration.suggest_threshold,
            "precision_bound": calibration.precision_bound, "coverage": calibration.coverage,
            "labels_needed": calibration.labels_needed, "by_language": calibration.by_language,
            "evidence": calibration.evidence, **calibration.summary,
        }
        self.stdout.write(json.dumps(result, indent=2))
        pooled = {"answer_threshold": calibration.answer_threshold, "precision_bound": calibration.precision_bound,
                  "coverage": calibration.coverage, "labels_needed": calibration.labels_needed}
        for language, fitted in (calibration.by_language or {"": pooled}).items():
            self._report(calibration, f"{kb.slug} ({language} questions)" if language else kb.slug, fitted)

    def _report(self, calibration: Calibration, who: str, fitted: dict[str, Any]) -> None:
        if fitted["answer_threshold"] is None:
            more = (f"about {fitted['labels_needed']} more labelled questions like these might certify it"
                    if fitted["labels_needed"] else "no cut-off is precise enough: more labels of the same kind "
                    "will not help; improve the entries or the reranker")
            self.stdout.write(self.style.WARNING(
                f"No cut-off reaches precision {calibration.target_precision} at confidence "
                f"{calibration.confidence}: {who} will not auto-answer (it suggests); {more}."))
        else:
            self.stdout.write(self.style.SUCCESS(
                f"{who} auto-answers at top score >= {fitted['answer_threshold']}: precision >= "
                f"{fitted['precision_bound']:.3f} with {calibration.confidence:.0%} confidence, covering "
                f"{fitted['coverage']:.1%} of the evidence questions."))
