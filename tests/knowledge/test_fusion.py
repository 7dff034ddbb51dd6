"""knowledge.fusion: pure functions over Hit lists, no database."""

import pytest

from knowledge import fusion
from knowledge.selectors import Hit


def hits(*pairs: tuple[int, float]) -> list[Hit]:
    return [Hit(entry_id=entry_id, score=score) for entry_id, score in pairs]


def order(fused: list[Hit]) -> list[int]:
    return [hit.entry_id for hit in fused]


# Vector cosine scores and ts_rank_cd scores on their own scales; entry 3 is last for the vector
# list and first for full text, entry 4 only appears in full text.
VECTOR = hits((1, 0.90), (2, 0.80), (3, 0.50))
FULLTEXT = hits((3, 0.40), (4, 0.10))


def test_rrf_sums_reciprocal_ranks_and_breaks_exact_ties_by_best_rank_then_id() -> None:
    # 1 and 3 both score 1/61 + 1/63; 2 and 4 both 1/62. Each tie goes to the lower id.
    fused = fusion.rrf(hits((1, 0.9), (2, 0.8), (3, 0.7)), hits((3, 9.0), (4, 8.0), (1, 7.0)))

    assert order(fused) == [1, 3, 2, 4]
    assert fused[0].score == pytest.approx(0.5 / 61 + 0.5 / 63)
    assert fused[2].score == pytest.approx(0.5 / 62)


@pytest.mark.parametrize(("vector_weight", "expected"), [
    (0.5, [10, 40, 20, 30]),  # plain RRF: 10 and 40 tie at rank 1, lower id first
    (0.3, [40, 10, 20, 30]),  # full text trusted more: its only hit leads
    (0.9, [10, 20, 30, 40]),  # vector trusted more: full text's hit falls behind all vector hits
])
def test_weighted_rrf_moves_entries_toward_the_heavier_list(vector_weight: float, expected: list[int]) -> None:
    vector = hits((10, 0.9), (20, 0.8), (30, 0.7))
    fulltext = hits((40, 3.0))

    assert order(fusion.rrf(vector, fulltext, vector_weight=vector_weight)) == expected


@pytest.mark.parametrize(("vector_weight", "expected", "top_score"), [
    (0.5, [1, 3, 2, 4], 0.5),  # 1 = 0.5·1.0, 3 = 0.5·0.0 + 0.5·1.0: tie, lower id first
    (0.8, [1, 2, 3, 4], 0.8),
    (0.3, [3, 1, 2, 4], 0.7),
])
def test_linear_min_max_scales_each_list_before_mixing(
    vector_weight: float, expected: list[int], top_score: float,
) -> None:
    fused = fusion.linear(VECTOR, FULLTEXT, vector_weight=vector_weight)

    assert order(fused) == expected
    assert fused[0].score == pytest.approx(top_score)
    assert fused[-1] == Hit(entry_id=4, score=0.0)  # the lowest full-text score scales to 0


def test_linear_gives_a_list_of_equal_scores_full_weight() -> None:
    fused = fusion.linear(hits((7, 0.3)), hits((8, 0.02), (9, 0.02)), vector_weight=0.6)

    assert order(fused) == [7, 8, 9]
    assert [hit.score for hit in fused] == pytest.approx([0.6, 0.4, 0.4])


def test_fuse_uses_the_measured_parameters_of_each_language() -> None:
    # bench/retrieval_choices.py's choice on all three sets: one linear mix for both languages.
    assert fusion.params_for("zh") == fusion.params_for("en") == fusion.FusionParams(method="linear", vector_weight=0.6)
    # 1: 0.6 · 1; 2: 0.6 · 0.75; 3: 0.4 · 1 (first in full text, last of the vectors); 4: 0.
    assert [hit.score for hit in fusion.fuse(VECTOR, FULLTEXT, language="zh")] == pytest.approx([0.6, 0.45, 0.4, 0.0])


def test_language_variants_share_parameters_and_unknown_languages_get_the_default() -> None:
    assert fusion.params_for("zh-CN") == fusion.params_for("zh_TW") == fusion.params_for("zh")
    assert fusion.params_for("EN-us") == fusion.params_for("en")
    assert fusion.params_for("fr") == fusion.DEFAULT_PARAMS


def test_limit_cuts_after_ordering_and_duplicates_count_once() -> None:
    # Counted twice, entry 1 would tie entry 2 (1/61 + 1/62) and win on id; once, 2 leads.
    vector = hits((1, 0.9), (1, 0.1), (2, 0.8))
    fused = fusion.rrf(vector, hits((2, 0.5), (3, 0.4)), limit=2)

    assert order(fused) == [2, 1]
    assert all(isinstance(hit, Hit) for hit in fused)


@pytest.mark.parametrize("method", ["rrf", "linear"])
def test_one_empty_list_keeps_the_other_order_and_two_give_nothing(method: str) -> None:
    params = fusion.FusionParams(method=method, vector_weight=0.5)  # type: ignore[arg-type]

    assert order(fusion.fuse_with([], FULLTEXT, params=params)) == [3, 4]
    assert order(fusion.fuse_with(VECTOR, [], params=params)) == [1, 2, 3]
    assert fusion.fuse_with([], [], params=params) == []


@pytest.mark.parametrize(("method", "expected", "label"), [
    ("vector", [1, 2, 3], "skipped: vector only"),
    ("fulltext", [3, 4], "skipped: fulltext only"),
    ("linear", [1, 2, 3, 4], "linear 0.7"),
])
def test_a_skipped_fusion_passes_one_list_through_and_says_so(method: str, expected: list[int], label: str) -> None:
    params = fusion.FusionParams(method=method, vector_weight=0.7)  # type: ignore[arg-type]

    assert order(fusion.fuse_with(VECTOR, FULLTEXT, params=params, limit=4)) == expected
    assert params.label == label
