from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from chat.services.ask import decide, faq_rerank_document
from knowledge.models import FaqEntry, KnowledgeBase
from knowledge.selectors import faq_recall, knowledge_base_embedding_status
from rerank.batching import RerankRequest
from rerank.services import rerank_score

CUTOFFS = (1, 5, 10, 50)
STAGES = ("vector", "fulltext", "fused", "reranked")
RERANK_BATCH = 8


def _load_queries(path: Path) -> list[dict[str, Any]]:
    queries = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise CommandError(f"Cannot read {path}: {exc}") from exc
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise CommandError(f"{path}:{number}: not JSON ({exc.msg})") from exc
        if not isinstance(row, dict) or not isinstance(row.get("query"), str) or not row["query"].strip() \
                or not isinstance(row.get("relevant_ids"), list) or not row["relevant_ids"]:
            raise CommandError(f'{path}:{number}: expected {{"query": text, "relevant_ids": [ids]}}')
        queries.append(row)
    if not queries:
        raise CommandError(f"{path} has no queries")
    return queries


def _metrics(rankings: list[list[int]], relevant: list[set[int]]) -> dict[str, float]:
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


class Command(BaseCommand):
    help = ("Measure answer quality on a JSONL file of {query, relevant_ids} (FAQ external ids): Recall@1/5/10/50 "
            "and MRR@10 for the vector, full-text, fused and reranked stages, and the decision mix.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--kb", required=True)
        parser.add_argument("--queries", required=True, type=Path)
        parser.add_argument("--wait", type=float, default=600, help="seconds to wait for embeddings to complete")
        parser.add_argument("--limit", type=int, help="only the first N queries")

    def handle(self, *args: Any, **options: Any) -> None:
        kb = KnowledgeBase.objects.filter(slug=options["kb"]).first()
        if kb is None:
            raise CommandError(f"No knowledge base with slug {options['kb']!r}.")
        queries = _load_queries(options["queries"])[: options["limit"]]
        self._wait_for_embeddings(kb, options["wait"])
        ids = dict(FaqEntry.objects.filter(kb=kb).exclude(external_id=None).values_list("external_id", "pk"))
        relevant = [{ids[str(x)] for x in row["relevant_ids"] if str(x) in ids} for row in queries]
        unknown = sum(1 for wanted in relevant if not wanted)
        if unknown:
            self.stderr.write(f"{unknown} queries name no id of this knowledge base; they count as misses.")

        rankings: dict[str, list[list[int]]] = {stage: [] for stage in STAGES}
        decisions = {"answer": 0, "suggest": 0, "handoff": 0}
        progress = tqdm(total=len(queries), desc="queries", disable=None)
        for start in range(0, len(queries), RERANK_BATCH):
            batch = queries[start:start + RERANK_BATCH]
            recalls = [faq_recall(kb=kb, query=row["query"], recall_k=max(CUTOFFS), limit=max(CUTOFFS))
                       for row in batch]
            to_rerank = [recall.candidates[: kb.rerank_k] for recall in recalls]
            outcome = rerank_score(
                requests=[RerankRequest(query=row["query"], documents=[faq_rerank_document(c.entry) for c in cands],
                                        instruction=kb.rerank_instruction)
                          for row, cands in zip(batch, to_rerank, strict=True)],
                timeout=600,
            )
            if outcome.status != "ok":
                raise CommandError(f"The rerank worker did not answer ({outcome.reason}); is it running?")
            for recall, cands, scores in zip(recalls, to_rerank, outcome.scores, strict=True):
                rankings["vector"].append([hit.entry_id for hit in recall.vector_hits])
                rankings["fulltext"].append([hit.entry_id for hit in recall.fulltext_hits])
                fused = [c.entry.pk for c in recall.candidates]
                rankings["fused"].append(fused)
                order = sorted(range(len(cands)), key=lambda index: -scores[index])
                reranked = [cands[index].entry.pk for index in order]
                # Past rerank_k the product shows nothing more; for recall@50 the fused tail follows.
                rankings["reranked"].append(reranked + [pk for pk in fused if pk not in set(reranked)])
                top = scores[order[0]] if order else None
                decisions[decide(kb=kb, top_score=top, degraded=False, has_candidates=bool(cands))] += 1
            progress.update(len(batch))
        progress.close()
        report = {
            "queries": len(queries),
            "stages": {stage: _metrics(rankings[stage], relevant) for stage in STAGES},
            "decisions": decisions,
        }
        self.stdout.write(json.dumps(report, indent=2))

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

