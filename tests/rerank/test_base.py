"""The Qwen3 prompt format and the engine contract (no model needed)."""

from __future__ import annotations

from rerank.engines.base import (
    DEFAULT_INSTRUCTION,
    PREFIX,
    SUFFIX,
    WEB_SEARCH_INSTRUCTION,
    RerankEngine,
    document_part,
    format_pair,
    query_part,
)


def test_format_is_the_model_cards_to_the_character() -> None:
    assert PREFIX == (
        "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the "
        'Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n'
    )
    assert SUFFIX == "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    assert format_pair("I", "Q", "D") == PREFIX + "<Instruct>: I\n<Query>: Q\n<Document>: D" + SUFFIX
    assert WEB_SEARCH_INSTRUCTION == "Given a web search query, retrieve relevant passages that answer the query"
    assert DEFAULT_INSTRUCTION == "Given a customer's support question, judge whether the FAQ entry solves it"


def test_vllm_split_concatenates_to_the_same_prompt() -> None:
    assert query_part("I", "Q") == PREFIX + "<Instruct>: I\n<Query>: Q\n"
    assert document_part("D") == "<Document>: D" + SUFFIX
    assert query_part("I", "如何退款?") + document_part("退款五天到账") == format_pair("I", "如何退款?", "退款五天到账")


class _CountingEngine(RerankEngine):
    name = "counting"
    model = "length"

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[str], str]] = []

    def _score_unique(self, query: str, documents: list[str], instruction: str) -> list[float]:
        self.calls.append((query, documents, instruction))
        return [len(document) / 100 for document in documents]

    def count_tokens(self, query: str, documents: list[str], *, instruction: str | None = None) -> int:
        return len(query) + sum(map(len, documents))


def test_duplicates_are_scored_once_and_fanned_out_in_input_order() -> None:
    engine = _CountingEngine()

    scores = engine.score("q", ["aa", "b", "aa", "cccc", "b"])

    assert scores == [0.02, 0.01, 0.02, 0.04, 0.01]
    assert engine.calls == [("q", ["aa", "b", "cccc"], DEFAULT_INSTRUCTION)]


def test_instruction_is_passed_through_and_empty_input_costs_nothing() -> None:
    engine = _CountingEngine()

    assert engine.score("q", []) == []
    engine.score("q", ["x"], instruction=WEB_SEARCH_INSTRUCTION)

    assert engine.calls == [("q", ["x"], WEB_SEARCH_INSTRUCTION)]
