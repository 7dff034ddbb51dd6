"""`manage.py kb_eval`: answer quality and decision quality on labelled questions, through the real pipeline."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from chat.calibration import Observation, decisions_report, risk_coverage
from chat.evaluation import EvaluationError, LabelledQuery, Scored, labelled_queries_read, queries_score
from chat.services.ask import Thresholds, decide, decision_thresholds
from knowledge.models import FaqEntry, KnowledgeBase
from knowledge.selectors import knowledge_base_embedding_status

CUTOFFS = (1, 5, 10, 50)
STAGES = ("vector", "fulltext", "fused", "reranked")
# The risk–coverage table printed: coarser than the calibration grid, to stay readable.
TABLE_CUTOFFS = tuple(round(0.95 - step * 0.05, 2) for step in range(19))


def _metrics(rankings: list[list[int]], relevant: list[frozenset[int]]) -> dict[str, float]:
    result: dict[str, float] = {}
    for cutoff in CUTOFFS:
        hits = sum(bool(set(ranking[:cutoff]) & wanted) for ranking, wanted in zip(rankings, relevant, strict=True))
        result[f"recall@{cutoff}"] = round(hits / len(rankings), 4)
    reciprocal = 0.0
    for ranking, wanted in zip(rankings, relevant, strict=True):
        for position, entry_id in enumerate(ranking[:10], start=1):
            if entry_id in wanted:
                reciprocal += 1 / position
                break
    result["mrr@10"] = round(reciprocal / len(rankings), 4)
    return result


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return {key: _rounded(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_rounded(item) for item in value]
    return value


class Command(BaseCommand):
    help = ("Measure answer quality on a JSONL file of {query, relevant_ids} (FAQ external ids): Recall@1/5/10/50 "
            "and MRR@10 for the vector, full-text, fused and reranked stages; and decision quality: precision of "
            "`answer`, coverage, the decision mix, the risk-coverage table, AUROC and calibration error of the top "
            "score. Lines with relevant_ids [] are no-answer questions: their false-answer rate is reported.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--kb", required=True)
        parser.add_argument("--queries", required=True, type=Path)
        parser.add_argument("--wait", type=float, default=600, help="seconds to wait for embeddings to complete")
        parser.add_argument("--limit", type=int, help="only the first N queries")
        parser.add_argument("--simulate-no-answer", action="store_true",
                            help="also ask every answerable query with its relevant entries left out of the "
                                 "candidates, and report the false-answer rate of those")

    def handle(self, *args: Any, **options: Any) -> None:
        kb = KnowledgeBase.objects.select_related("calibration").filter(slug=options["kb"]).first()
        if kb is None:
            raise CommandError(f"No knowledge base with slug {options['kb']!r}.")
        try:
            rows = labelled_queries_read(options["queries"])[: options["limit"]]
        except EvaluationError as exc:
            raise CommandError(str(exc)) from exc
        self._wait_for_embeddings(kb, options["wait"])
        ids = dict(FaqEntry.objects.filter(kb=kb).exclude(external_id=None).values_list("external_id", "pk"))
        queries = []
        for row in rows:
            relevant = frozenset(ids[str(x)] for x in row["relevant_ids"] if str(x) in ids)
            queries.append(LabelledQuery(query=row["query"], relevant=relevant,
                                         unmatched=bool(row["relevant_ids"]) and not relevant))
        unknown = sum(item.unmatched for item in queries)
        if unknown:
            self.stderr.write(f"{unknown} queries name no id of this knowledge base; they count as misses.")
        answerable = [item for row, item in zip(rows, queries, strict=True) if row["relevant_ids"]]
        left_out = [LabelledQuery(query=item.query, relevant=frozenset(), exclude=tuple(sorted(item.relevant)))
                    for item in answerable if item.relevant] if options["simulate_no_answer"] else []

        with tqdm(total=len(queries) + len(left_out), desc="queries", disable=None) as progress:
            try:
                run = queries_score(kb=kb, queries=[*queries, *left_out], recall_k=max(CUTOFFS),
                                    recall_limit=max(CUTOFFS), progress=progress.update)
            except EvaluationError as exc:
                raise CommandError(str(exc)) from exc
        asked, simulated = run.scored[: len(queries)], run.scored[len(queries):]
        with_answer = [scored for row, scored in zip(rows, asked, strict=True) if row["relevant_ids"]]
        report: dict[str, Any] = {
            "queries": len(queries), "answerable": len(with_answer), "no_answer": len(queries) - len(with_answer),
            "rerank": {"engine": run.engine, "model": run.model},
        }
        if with_answer:
            report["stages"] = {stage: _metrics(self._rankings(with_answer, stage),
                                                [s.query.relevant for s in with_answer]) for stage in STAGES}
        # By the question's language: a calibration fitted per language decides each with its own.
        thresholds = {language: decision_thresholds(kb=kb, engine=run.engine, model=run.model, language=language)
                      for language in sorted({item.recall.language for item in run.scored})}
        report["thresholds"] = {language: asdict(fitted) for language, fitted in thresholds.items()}
        report["decision"] = self._decisions(asked, kb=kb, thresholds=thresholds)
        if simulated:
            report["simulated_no_answer"] = self._decisions(simulated, kb=kb, thresholds=thresholds, table=False)
        self.stdout.write(json.dumps(_rounded(report), indent=2, ensure_ascii=False))

    @staticmethod
    def _rankings(scored: list[Scored], stage: str) -> list[list[int]]:
        rankings = []
        for item in scored:
            recall = item.recall
            fused = [c.entry.pk for c in recall.candidates]
            if stage == "vector":
                rankings.append([hit.entry_id for hit in recall.vector_hits])
            elif stage == "fulltext":
                rankings.append([hit.entry_id for hit in recall.fulltext_hits])
            elif stage == "fused":
                rankings.append(fused)
            else:
                # Past rerank_k the product shows nothing more; for recall@50 the fused tail follows.
                reranked = set(item.reranked)
                rankings.append(item.reranked + [pk for pk in fused if pk not in reranked])
        return rankings

    @staticmethod
    def _decisions(scored: list[Scored], *, kb: KnowledgeBase, thresholds: dict[str, Thresholds],
                   table: bool = True) -> dict[str, Any]:
        observations: list[Observation] = [item.observation(top_n=kb.top_n) for item in scored]
        decisions = [decide(thresholds=thresholds[item.recall.language], top_score=o.score, degraded=False,
                            has_candidates=bool(item.reranked)) for o, item in zip(observations, scored, strict=True)]
        report = asdict(decisions_report(observations, decisions))
        total = len(decisions) or 1
        report["decision_shares"] = {name: count / total for name, count in report["decisions"].items()}
        if table:
            report["risk_coverage"] = [
                {"cutoff": row.cutoff, "coverage": row.coverage, "precision": row.precision}
                for row in risk_coverage(observations, confidence=kb.target_confidence, grid=TABLE_CUTOFFS)]
        return report

    def _wait_for_embeddings(self, kb: KnowledgeBase, wait: float) -> None:
        deadline = time.monotonic() + wait
        status = knowledge_base_embedding_status(kb=kb)
        with tqdm(total=status.entries, desc="embeddings", disable=None) as bar:
            while not status.complete:
                bar.n = status.embedded
                bar.refresh()
                if time.monotonic() > deadline:
                    raise CommandError(f"Embeddings incomplete after {wait:.0f}s ({status.embedded} of "
                                       f"{status.entries}); is the CPU worker running? (`kb_reembed` fills them)")
                time.sleep(1)
                status = knowledge_base_embedding_status(kb=kb)
            bar.n = status.entries
            bar.refresh()
