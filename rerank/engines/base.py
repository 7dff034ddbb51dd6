"""The contract every rerank engine keeps, and the Qwen3-Reranker prompt format they share.

The format is copied to the letter from the Qwen3-Reranker model card (see QWEN3_RERANKER.md):
a stray newline or a different split between query and document changes every score.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

PREFIX = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the "
    'Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n'
)
SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"

# The model card's default; kept for comparisons with published numbers.
WEB_SEARCH_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"
# The project's default. In English whatever the language of the KB: the model was trained with
# English instructions.
DEFAULT_INSTRUCTION = "Given a customer's support question, judge whether the FAQ entry solves it"

DEFAULT_MAX_TOKENS = 8192
WARMUP_CHUNK = 32  # documents per engine call while warming up
# Below this many tokens left for the document the query itself is cut (see PromptFitter).
MIN_DOCUMENT_TOKENS = 64


def format_pair(instruction: str, query: str, document: str) -> str:
    """The whole prompt of one (query, document) pair, exactly as in the model card."""
    return f"{PREFIX}<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {document}{SUFFIX}"


def query_part(instruction: str, query: str) -> str:
    """What vLLM is sent as the query: it concatenates query and document strings as they are."""
    return f"{PREFIX}<Instruct>: {instruction}\n<Query>: {query}\n"


def document_part(document: str) -> str:
    """What vLLM is sent as each document; ``query_part + document_part == format_pair``."""
    return f"<Document>: {document}{SUFFIX}"


class RerankEngine(ABC):
    """Scores documents against a query: probabilities in [0, 1], in the documents' order.

    Scores are comparable across queries (answer/suggest/handoff thresholds rely on it).
    Identical documents are scored once: recall often returns the same text twice (an entry and
    its revision, two KBs sharing an answer) and a cross-encoder pass is the expensive part.
    """

    name: str
    model: str
    # The languages in which this engine's order is better than recall's; None: all of them. Where it
    # is not, its scores still decide (answer/suggest/hand off) but the candidates keep recall's order.
    reorders_in: frozenset[str] | None = None

    def score(self, query: str, documents: list[str], *, instruction: str | None = None) -> list[float]:
        if not documents:
            return []
        unique = list(dict.fromkeys(documents))
        scores = self._score_unique(query, unique, instruction or DEFAULT_INSTRUCTION)
        if len(scores) != len(unique):
            raise RuntimeError(f"{self.name} returned {len(scores)} scores for {len(unique)} documents")
        by_document = dict(zip(unique, scores, strict=True))
        return [by_document[document] for document in documents]

    def score_batch(self, requests: Sequence[tuple[str, list[str], str | None]]) -> list[list[float]]:
        """Score several (query, documents, instruction) requests, each in its documents' order.

        The micro-batcher hands over every request that arrived within a few milliseconds;
        engines that can score all their pairs in one model call override this."""
        return [self.score(query, documents, instruction=instruction) for query, documents, instruction in requests]

    def warm_up(self, documents: list[str], *, progress: Callable[[int, int], None]) -> None:
        """Score once before serving: a few documents load the model's lazily built parts. Engines
        that cache per-document work (lite) score them all. ``progress(done, total)`` after each call."""
        self._score_in_chunks(documents[:WARMUP_CHUNK] or ["warm-up"], progress)

    def _score_in_chunks(self, documents: list[str], progress: Callable[[int, int], None]) -> None:
        progress(0, len(documents))
        for start in range(0, len(documents), WARMUP_CHUNK):
            chunk = documents[start:start + WARMUP_CHUNK]
            self.score(chunk[0], chunk)
            progress(start + len(chunk), len(documents))

    @abstractmethod
    def _score_unique(self, query: str, documents: list[str], instruction: str) -> list[float]:
        """Score distinct documents, in their order."""

    @abstractmethod
    def count_tokens(self, query: str, documents: list[str], *, instruction: str | None = None) -> int:
        """Tokens the model reads to score these documents (reported as the API's usage)."""


class Tokenizer(Protocol):
    """The slice of a Hugging Face fast tokenizer that truncation needs."""

    def __call__(self, text: Any, **kwargs: Any) -> Any: ...


@dataclass(frozen=True)
class Prompt:
    """One (query, document) pair, cut to fit, in both shapes the engines need."""

    query_part: str
    document_part: str
    input_ids: list[int]  # of query_part + document_part


@dataclass(frozen=True)
class FittedPrompts:
    query_part: str
    documents: list[str]  # the documents as sent: cut so that each whole prompt fits
    input_ids: list[list[int]]  # token ids of query_part + document_part(document), per document


class PromptFitter:
    """Cuts documents by tokens so that every whole prompt fits ``max_tokens``.

    Only the document (and, for a pathological query, the query) is cut, never the prefix or the
    suffix: the suffix holds the assistant turn whose next token is read, so a prompt truncated
    at the end (vLLM's ``truncate_prompt_tokens``) would score garbage. The cut is made on the
    text, at a token's character offset, so every engine sends the same string; the length is
    then checked on the whole prompt, because BPE can merge across the document's edges.
    """

    def __init__(self, tokenizer: Tokenizer, max_tokens: int = DEFAULT_MAX_TOKENS) -> None:
        self._tokenizer = tokenizer
        self.max_tokens = max_tokens
        self._fixed_document_tokens = self.count([document_part("")])[0]

    def count(self, texts: Sequence[str]) -> list[int]:
        return [len(ids) for ids in self.encode(texts)]

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        if not texts:
            return []
        return [list(ids) for ids in self._tokenizer(list(texts), add_special_tokens=False)["input_ids"]]

    def cut(self, text: str, max_tokens: int) -> str:
        """The longest prefix of ``text`` that stays within ``max_tokens`` tokens on its own."""
        if max_tokens <= 0:
            return ""
        offsets = self._tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        if len(offsets) <= max_tokens:
            return text
        # Cut where the first dropped token starts; a character split over several byte-level
        # tokens is dropped whole.
        return text[: offsets[max_tokens][0]]

    def fit(self, instruction: str, query: str, documents: list[str]) -> FittedPrompts:
        qpart = query_part(instruction, query)
        budget = self.max_tokens - self.count([qpart])[0] - self._fixed_document_tokens
        if budget < MIN_DOCUMENT_TOKENS:
            # A query that crowds the document out is cut to half the prompt: the document is what
            # is judged, and real questions are short (KB_MAX_QUESTION_CHARS).
            allowed = self.max_tokens // 2 - self.count([query_part(instruction, "")])[0]
            if allowed > 0:
                qpart = query_part(instruction, self.cut(query, allowed))
                budget = self.max_tokens - self.count([qpart])[0] - self._fixed_document_tokens
        if budget <= 0:
            raise ValueError(f"instruction and query leave no room for a document in {self.max_tokens} tokens")

        fitted = [self.cut(document, budget) for document in documents]
        input_ids = self.encode([qpart + document_part(document) for document in fitted])
        for index, ids in enumerate(input_ids):
            document = fitted[index]
            # Merges across the document's edges can add a token or two: shave until it fits.
            for _ in range(8):
                excess = len(ids) - self.max_tokens
                if excess <= 0:
                    break
                document = self.cut(document, max(self.count([document])[0] - excess, 0))
                ids = self.encode([qpart + document_part(document)])[0]
            if len(ids) > self.max_tokens:
                raise ValueError(f"prompt does not fit {self.max_tokens} tokens even without a document")
            fitted[index], input_ids[index] = document, ids
        return FittedPrompts(query_part=qpart, documents=fitted, input_ids=input_ids)


class Qwen3Engine(RerankEngine):
    """An engine running Qwen3-Reranker: format, cut, then score every pair in one model call.

    A micro-batch of requests (``score_batch``) becomes one call too, so concurrent questions
    share a GPU pass instead of queueing behind each other.
    """

    _fitter: PromptFitter

    @abstractmethod
    def _score_prompts(self, prompts: list[Prompt]) -> list[float]:
        """Scores of the prompts, in their order."""

    def _score_unique(self, query: str, documents: list[str], instruction: str) -> list[float]:
        return self._score_prompts(self._prompts(query, documents, instruction))

    def score_batch(self, requests: Sequence[tuple[str, list[str], str | None]]) -> list[list[float]]:
        prompts: list[Prompt] = []
        spans: list[tuple[list[str], int]] = []
        for query, documents, instruction in requests:
            unique = list(dict.fromkeys(documents))
            spans.append((unique, len(prompts)))
            if unique:
                prompts.extend(self._prompts(query, unique, instruction or DEFAULT_INSTRUCTION))
        scores = self._score_prompts(prompts) if prompts else []
        if len(scores) != len(prompts):
            raise RuntimeError(f"{self.name} returned {len(scores)} scores for {len(prompts)} prompts")
        results = []
        for (_, documents, _), (unique, start) in zip(requests, spans, strict=True):
            by_document = dict(zip(unique, scores[start : start + len(unique)], strict=True))
            results.append([by_document[document] for document in documents])
        return results

    def count_tokens(self, query: str, documents: list[str], *, instruction: str | None = None) -> int:
        unique = list(dict.fromkeys(documents))
        if not unique:
            return 0
        return sum(len(prompt.input_ids) for prompt in self._prompts(query, unique, instruction or DEFAULT_INSTRUCTION))

    def _prompts(self, query: str, documents: list[str], instruction: str) -> list[Prompt]:
        fitted = self._fitter.fit(instruction, query, documents)
        return [
            Prompt(fitted.query_part, document_part(document), ids)
            for document, ids in zip(fitted.documents, fitted.input_ids, strict=True)
        ]
