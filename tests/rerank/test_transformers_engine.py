"""The transformers engine against the model card's formula, computed here one pair at a time."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from rerank.engines.base import DEFAULT_INSTRUCTION, WEB_SEARCH_INSTRUCTION, PromptFitter, format_pair
from rerank.engines.transformers_engine import TransformersEngine
from tests.rerank.conftest import reference_scorer

QUERY = "How do I reset my password?"
DOCUMENTS = [
    "Open Settings, choose Account, then Reset password.",
    "Refunds are paid back to the original card within five working days.",
    "x",
    "如何修改密码？打开设置，选择账户，然后点击重置密码。",
    "Shipping to Europe takes three to seven days. Tracking numbers are sent by e-mail. " * 6,
    "yes",
]
HUGE = "You can delete your account from the privacy page; the data is removed after two weeks. " * 400

ReferenceScore = Callable[[str, str, str], float]


@pytest.fixture(scope="module")
def reference(tiny_qwen3: Path) -> ReferenceScore:
    return reference_scorer(tiny_qwen3)


@pytest.fixture(scope="module")
def engine(tiny_qwen3: Path) -> TransformersEngine:
    return TransformersEngine(str(tiny_qwen3), max_tokens=256, batch_size=4)


def spy_on_forward(engine: TransformersEngine, monkeypatch: pytest.MonkeyPatch) -> list[list[list[int]]]:
    """Record the token ids of every batch the engine runs through the model."""
    calls: list[list[list[int]]] = []
    original = engine._forward

    def spy(prompts: list[list[int]]) -> list[float]:
        calls.append(prompts)
        return original(prompts)

    monkeypatch.setattr(engine, "_forward", spy)
    return calls


@pytest.fixture
def forward_calls(engine: TransformersEngine, monkeypatch: pytest.MonkeyPatch) -> list[list[list[int]]]:
    return spy_on_forward(engine, monkeypatch)


def test_single_pairs_equal_the_reference(engine: TransformersEngine, reference: ReferenceScore) -> None:
    for document in DOCUMENTS[:4]:
        for instruction in (DEFAULT_INSTRUCTION, WEB_SEARCH_INSTRUCTION):
            assert engine.score(QUERY, [document], instruction=instruction)[0] == pytest.approx(
                reference(instruction, QUERY, document), abs=1e-5
            )


def test_padded_batch_of_different_lengths_equals_the_reference(
    tiny_qwen3: Path, reference: ReferenceScore, monkeypatch: pytest.MonkeyPatch
) -> None:
    wide = TransformersEngine(str(tiny_qwen3), max_tokens=1024, batch_size=16)
    calls = spy_on_forward(wide, monkeypatch)

    scores = wide.score(QUERY, DOCUMENTS)

    assert len(calls) == 1 and len({len(prompt) for prompt in calls[0]}) == len(DOCUMENTS)  # all padded
    expected = [reference(DEFAULT_INSTRUCTION, QUERY, document) for document in DOCUMENTS]
    assert scores == pytest.approx(expected, abs=1e-5)
    # Random weights still give scores spread enough for these checks to mean something.
    assert max(expected) - min(expected) > 0.05


def test_batches_are_grouped_by_length(engine: TransformersEngine, forward_calls: list[list[list[int]]]) -> None:
    engine.score(QUERY, [*DOCUMENTS, "short", "a bit longer document text", "z"])

    widths = [[len(prompt) for prompt in batch] for batch in forward_calls]
    assert [len(batch) for batch in widths] == [4, 4, 1]
    assert all(max(a) <= min(b) for a, b in itertools.pairwise(widths))


def test_truncation_cuts_the_document_and_keeps_the_suffix(
    engine: TransformersEngine,
    tiny_qwen3: Path,
    reference: ReferenceScore,
    forward_calls: list[list[list[int]]],
) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_qwen3)
    suffix_ids = tokenizer("<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n", add_special_tokens=False)[
        "input_ids"
    ]

    score = engine.score(QUERY, [HUGE])[0]

    (prompt,) = forward_calls[0]
    assert len(prompt) <= 256
    assert len(prompt) >= 246  # the budget is used, not thrown away
    assert prompt[-len(suffix_ids) :] == suffix_ids
    cut = PromptFitter(tokenizer, 256).fit(DEFAULT_INSTRUCTION, QUERY, [HUGE]).documents[0]
    assert 0 < len(cut) < len(HUGE) and HUGE.startswith(cut)
    assert score == pytest.approx(reference(DEFAULT_INSTRUCTION, QUERY, cut), abs=1e-5)


def test_a_huge_query_is_cut_before_the_document_disappears(
    engine: TransformersEngine, tiny_qwen3: Path, reference: ReferenceScore, forward_calls: list[list[list[int]]]
) -> None:
    document = "Open Settings, choose Account, then Reset password."
    score = engine.score(HUGE, [document])[0]

    (prompt,) = forward_calls[0]
    assert len(prompt) <= 256
    text = str(AutoTokenizer.from_pretrained(tiny_qwen3).decode(prompt))
    # The whole document is read; the query is what was cut, to a prefix of itself.
    assert f"\n<Document>: {document}<|im_end|>" in text, text
    cut_query = text.split("<Query>: ", 1)[1].split("\n<Document>: ", 1)[0]
    assert 0 < len(cut_query) < len(HUGE) and HUGE.startswith(cut_query)
    assert score == pytest.approx(reference(DEFAULT_INSTRUCTION, cut_query, document), abs=1e-5)


def test_duplicates_are_scored_once(engine: TransformersEngine, forward_calls: list[list[list[int]]]) -> None:
    scores = engine.score(QUERY, [DOCUMENTS[0], DOCUMENTS[1], DOCUMENTS[0], DOCUMENTS[0]])

    assert sum(len(batch) for batch in forward_calls) == 2
    assert scores[0] == scores[2] == scores[3] != scores[1]


def test_a_micro_batch_of_requests_is_one_model_pass(
    engine: TransformersEngine, forward_calls: list[list[list[int]]]
) -> None:
    requests = [
        (QUERY, [DOCUMENTS[0], DOCUMENTS[1], DOCUMENTS[0]], None),
        ("退款多久到账？", [DOCUMENTS[1], DOCUMENTS[3]], WEB_SEARCH_INSTRUCTION),
        ("empty", [], None),
    ]
    expected = [engine.score(query, documents, instruction=instruction) for query, documents, instruction in requests]
    forward_calls.clear()

    scores = engine.score_batch(requests)

    assert scores == [pytest.approx(row, abs=1e-6) for row in expected]
    assert [len(batch) for batch in forward_calls] == [4]  # 4 distinct pairs, batch_size 4


def test_token_count_is_the_length_of_the_prompts_the_model_reads(tiny_qwen3: Path) -> None:
    engine = TransformersEngine(str(tiny_qwen3))
    tokenizer = engine._fitter
    documents = ["first document", "second, longer document", "first document"]
    expected = sum(tokenizer.count([format_pair(DEFAULT_INSTRUCTION, "query", d)])[0] for d in documents[:2])
    assert engine.count_tokens("query", documents) == expected
