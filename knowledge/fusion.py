"""Merging the vector and full-text candidate lists into one list for the reranker.

Pure functions over ``Hit`` lists (best first, as ``faq_vector_search`` / ``faq_fulltext_search``
return them). The method and weight were chosen by ``bench/retrieval_choices.py`` out of fold across
sets; a language where no fusion held up would get ``method="vector"`` (or ``"fulltext"``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

# Module import, not ``from … import Hit``: selectors may import this module while it is itself
# still initialising (recall lives there), and the attribute is only looked up at call time.
from knowledge import selectors as kb_selectors

if TYPE_CHECKING:
    from knowledge.selectors import Hit

RRF_K = 60


@dataclass(frozen=True)
class FusionParams:
    # "vector" / "fulltext": fusion is skipped and that list passes through (for a language where no
    # fusion measured at least as good as its better input).
    method: Literal["rrf", "linear", "vector", "fulltext"]
    # Share of the vector list; the full-text list gets 1 - vector_weight.
    vector_weight: float = 0.5
    k: int = RRF_K

    @property
    def label(self) -> str:
        """How the answer names the fusion: "linear 0.7", or "skipped: vector only"."""
        if self.method in ("vector", "fulltext"):
            return f"skipped: {self.method} only"
        return f"{self.method} {self.vector_weight}"


# bench/retrieval_choices.py, chosen on StackFAQ, eval/zh and ATEC together: the best mean MRR@10 among
# the fusions never worse than their better input on any set. Out of fold (each set measured with the
# choice made on the other two) fusion is never below its better input by more than 0.005 MRR@10.
FUSION_PARAMS: dict[str, FusionParams] = {
    "zh": FusionParams(method="linear", vector_weight=0.6),
    "en": FusionParams(method="linear", vector_weight=0.6),
}
DEFAULT_PARAMS = FusionParams(method="linear", vector_weight=0.6)


def params_for(language: str) -> FusionParams:
    """``zh-CN`` and ``zh`` share parameters; unmeasured languages get DEFAULT_PARAMS."""
    return FUSION_PARAMS.get(language.split("-")[0].split("_")[0].lower(), DEFAULT_PARAMS)


def _first_occurrences(hits: Sequence[Hit]) -> list[Hit]:
    seen: set[int] = set()
    unique: list[Hit] = []
    for hit in hits:
        if hit.entry_id not in seen:
            seen.add(hit.entry_id)
            unique.append(hit)
    return unique


def _ranked(scores: dict[int, float], best_rank: dict[int, int], limit: int | None) -> list[Hit]:
    # Ties (same fused score) go to the entry one list liked more, then to the lower id, so the
    # order never depends on dict iteration order.
    order = sorted(scores, key=lambda entry_id: (-scores[entry_id], best_rank[entry_id], entry_id))
    if limit is not None:
        order = order[:limit]
    return [kb_selectors.Hit(entry_id=entry_id, score=scores[entry_id]) for entry_id in order]


def rrf(
    vector_hits: Sequence[Hit], fulltext_hits: Sequence[Hit], *, k: int = RRF_K, vector_weight: float = 0.5,
    limit: int | None = None,
) -> list[Hit]:
    """Weighted reciprocal rank fusion: sum of ``weight / (k + rank)`` over the lists (rank from 1).

    With ``vector_weight=0.5`` this is plain RRF scaled by one half, which orders identically."""
    scores: dict[int, float] = {}
    best_rank: dict[int, int] = {}
    for hits, weight in ((vector_hits, vector_weight), (fulltext_hits, 1.0 - vector_weight)):
        for rank, hit in enumerate(_first_occurrences(hits), start=1):
            scores[hit.entry_id] = scores.get(hit.entry_id, 0.0) + weight / (k + rank)
            best_rank[hit.entry_id] = min(rank, best_rank.get(hit.entry_id, rank))
    return _ranked(scores, best_rank, limit)


def _min_max(hits: Sequence[Hit]) -> dict[int, float]:
    if not hits:
        return {}
    high = max(hit.score for hit in hits)
    low = min(hit.score for hit in hits)
    if high == low:  # one hit, or all tied: each is as good as the list's best
        return {hit.entry_id: 1.0 for hit in hits}
    return {hit.entry_id: (hit.score - low) / (high - low) for hit in hits}


def linear(
    vector_hits: Sequence[Hit], fulltext_hits: Sequence[Hit], *, vector_weight: float = 0.5,
    limit: int | None = None,
) -> list[Hit]:
    """Score-normalised linear combination: each list min-max scaled to [0, 1] first, because cosine
    similarity and ts_rank_cd live on unrelated scales; an entry absent from a list scores 0 there."""
    vector = _min_max(_first_occurrences(vector_hits))
    fulltext = _min_max(_first_occurrences(fulltext_hits))
    best_rank: dict[int, int] = {}
    for hits in (vector_hits, fulltext_hits):
        for rank, hit in enumerate(_first_occurrences(hits), start=1):
            best_rank[hit.entry_id] = min(rank, best_rank.get(hit.entry_id, rank))
    scores = {
        entry_id: vector_weight * vector.get(entry_id, 0.0) + (1.0 - vector_weight) * fulltext.get(entry_id, 0.0)
        for entry_id in best_rank
    }
    return _ranked(scores, best_rank, limit)


def fuse_with(
    vector_hits: Sequence[Hit], fulltext_hits: Sequence[Hit], *, params: FusionParams, limit: int | None = None,
) -> list[Hit]:
    if params.method in ("vector", "fulltext"):
        return list(_first_occurrences(vector_hits if params.method == "vector" else fulltext_hits))[:limit]
    if params.method == "rrf":
        return rrf(vector_hits, fulltext_hits, k=params.k, vector_weight=params.vector_weight, limit=limit)
    return linear(vector_hits, fulltext_hits, vector_weight=params.vector_weight, limit=limit)


def fuse(
    vector_hits: Sequence[Hit], fulltext_hits: Sequence[Hit], *, language: str, limit: int | None = None,
) -> list[Hit]:
    """One candidate list, best first, with the measured method for ``language`` ("zh", "en")."""
    return fuse_with(vector_hits, fulltext_hits, params=params_for(language), limit=limit)
