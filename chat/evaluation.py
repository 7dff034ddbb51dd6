"""Asking many labelled questions through the real recall and rerank path, for kb_eval and kb_calibrate."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chat.calibration import Observation
from chat.services.ask import answer_order, faq_rerank_document
from knowledge.models import KnowledgeBase
from knowledge.selectors import HeldOutPhrasing, Recall, faq_queries_embed, faq_recall
from rerank.batching import RerankRequest
from rerank.services import RerankOutcome, rerank_score

# Questions per rerank worker round trip: 24 × rerank_k 20 = 480 documents, within one engine call of
# the worker's micro-batcher (512) and far within its task time limit.
RERANK_BATCH = 24
# Labelled evaluation is not a customer waiting: give the rerank worker all the time it needs.
RERANK_WAIT = 600


class EvaluationError(Exception):
    """Input or infrastructure that makes an evaluation impossible; the message says which."""


@dataclass(frozen=True)
class LabelledQuery:
    query: str
    relevant: frozenset[int]  # entry ids; empty = a no-answer question
    exclude: tuple[int, ...] = ()  # entries left out of recall for this ask
    held_out: HeldOutPhrasing | None = None  # the entry's own phrasing this question is, left out of recall
    # Labelled with ids this base does not have: an answerable question we can only get wrong.
    unmatched: bool = False


@dataclass
class Scored:
    query: LabelledQuery
    recall: Recall
    reranked: list[int]  # entry ids in the order an answer shows them (the reranker's, where it reorders)
    scores: list[float]  # their rerank scores, in that order

    def observation(self, *, top_n: int) -> Observation:
        top = self.scores[0] if self.scores else None
        return Observation(score=top, correct=bool(self.reranked) and self.reranked[0] in self.query.relevant,
                           answerable=bool(self.query.relevant) or self.query.unmatched,
                           shown=bool(set(self.reranked[:top_n]) & self.query.relevant))


@dataclass
class ScoredRun:
    scored: list[Scored] = field(default_factory=list)
    engine: str = ""
    model: str = ""


def labelled_queries_read(path: Path, *, allow_no_answer: bool = True) -> list[dict[str, Any]]:
    """``{"query", "relevant_ids"}`` lines; ``relevant_ids: []`` marks a no-answer question."""
    rows = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise EvaluationError(f"Cannot read {path}: {exc}") from exc
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise EvaluationError(f"{path}:{number}: not JSON ({exc.msg})") from exc
        if not isinstance(row, dict) or not isinstance(row.get("query"), str) or not row["query"].strip() \
                or not isinstance(row.get("relevant_ids"), list) or (not allow_no_answer and not row["relevant_ids"]):
            raise EvaluationError(f'{path}:{number}: expected {{"query": text, "relevant_ids": [ids]}}')
        rows.append(row)
    if not rows:
        raise EvaluationError(f"{path} has no queries")
    return rows


@dataclass
class ScoringMemo:
    """What asking the same questions again can reuse (the case check asks them before and after a
    change): query vectors by (embedding model, text) and rerank scores by (query, instruction,
    documents), both pure functions of their keys. Recall is always asked again: any change moves the
    BM25 statistics and the HNSW graph."""

    vectors: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    reranked: dict[tuple[str, str, tuple[str, ...]], tuple[list[float], RerankOutcome]] = field(default_factory=dict)


def _query_vectors(*, kb: KnowledgeBase, queries: Sequence[LabelledQuery], memo: ScoringMemo) -> list[list[float]]:
    keys = [(kb.embed_model, item.query) for item in queries]
    missing = list(dict.fromkeys(key for key in keys if key not in memo.vectors))
    vectors = faq_queries_embed(kb=kb, queries=[text for _, text in missing])
    memo.vectors.update(zip(missing, vectors, strict=True))
    return [memo.vectors[key] for key in keys]


def queries_score(*, kb: KnowledgeBase, queries: Sequence[LabelledQuery], recall_k: int | None = None,
                  recall_limit: int | None = None, progress: Callable[[int], None] | None = None,
                  memo: ScoringMemo | None = None) -> ScoredRun:
    """Recall and rerank every query as an ask does (the base's rerank_k candidates, its instruction):
    the queries embedded in batches first, then RERANK_BATCH of them per rerank worker round trip."""
    run = ScoredRun()
    memo = ScoringMemo() if memo is None else memo
    vectors = _query_vectors(kb=kb, queries=queries, memo=memo)
    for start in range(0, len(queries), RERANK_BATCH):
        batch = queries[start:start + RERANK_BATCH]
        recalls = [faq_recall(kb=kb, query=item.query, recall_k=recall_k, limit=recall_limit,
                              exclude_entry_ids=item.exclude, held_out=item.held_out, query_vector=vector)
                   for item, vector in zip(batch, vectors[start:start + RERANK_BATCH], strict=True)]
        to_rerank = [recall.candidates[: kb.rerank_k] for recall in recalls]
        requests = [RerankRequest(query=item.query, documents=[faq_rerank_document(c.entry) for c in cands],
                                  instruction=kb.rerank_instruction)
                    for item, cands in zip(batch, to_rerank, strict=True)]
        keys = [(request.query, request.instruction or "", tuple(request.documents)) for request in requests]
        due = list({key: index for index, key in enumerate(keys) if key not in memo.reranked}.values())
        if due:
            outcome = rerank_score(requests=[requests[index] for index in due], timeout=RERANK_WAIT)
            if outcome.status != "ok":
                raise EvaluationError(f"The rerank worker did not answer ({outcome.reason}); is it running?")
            for index, scores in zip(due, outcome.scores, strict=True):
                memo.reranked[keys[index]] = (scores, outcome)
        for item, recall, cands, key in zip(batch, recalls, to_rerank, keys, strict=True):
            scores, outcome = memo.reranked[key]
            run.engine, run.model = outcome.engine, outcome.model
            order = answer_order(scores, reorder=outcome.reorders(recall.language))
            run.scored.append(Scored(query=item, recall=recall, reranked=[cands[i].entry.pk for i in order],
                                     scores=[scores[i] for i in order]))
        if progress is not None:
            progress(len(batch))
    return run
