"""The sentence(s) of an answer that match the question, as offsets and as escaped HTML with <mark>.

Offsets are Python string indices (Unicode code points) into the answer text. The HTML escapes
everything and adds only ``<mark>`` tags, so no markup from an FAQ entry or a question can ever
reach a page through it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
from django.utils.html import escape

from knowledge.embedding import get_embedder

# A sentence ends at CJK punctuation, at ! ? ; or at a period followed by whitespace (so "5.0" and
# "www.example.com" stay whole), or at a line break.
_SENTENCE = re.compile(r"[^\n。！？!?；;]*?(?:[。！？!?；;]+|\.(?=\s)|\n|$)", re.S)
_WORD = re.compile(r"[a-z0-9]+(?:['’][a-z]+)?")
_CJK_RUN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")
_STOPWORDS = frozenset((
    "a", "an", "the", "is", "are", "was", "were", "be", "to", "of", "in", "on", "for", "and", "or", "my", "i",
    "me", "you", "your", "it", "this", "that", "how", "do", "does", "can", "what", "why", "when", "where", "with",
    "from", "at", "by", "as", "not", "no", "的", "了", "吗", "呢", "吧", "啊", "我", "你", "是", "在", "有", "怎么",
    "怎么办", "什么", "为什么", "如何", "可以", "一下", "请问",
))
MAX_SPANS = 2


@dataclass(frozen=True)
class Highlight:
    spans: list[tuple[int, int]]
    html: str

    def as_dict(self) -> dict[str, object]:
        return {"spans": [{"start": start, "end": end} for start, end in self.spans], "html": self.html}


def sentence_spans(text: str) -> list[tuple[int, int]]:
    spans = []
    for match in _SENTENCE.finditer(text):
        start, end = match.span()
        while start < end and text[start].isspace():
            start += 1
        while end > start and text[end - 1].isspace():
            end -= 1
        if end > start:
            spans.append((start, end))
    return spans


def _terms(text: str) -> set[str]:
    """Words for Latin text; character bigrams for Chinese (as the full-text index does), which
    match colloquial and misspelt questions without a dictionary."""
    lowered = text.casefold()
    terms = set(_WORD.findall(lowered))
    for run in _CJK_RUN.findall(lowered):
        terms |= {run[i: i + 2] for i in range(len(run) - 1)} if len(run) > 1 else {run}
    return {term for term in terms if term not in _STOPWORDS}


def _lexical(question_terms: set[str], sentence: str) -> float:
    if not question_terms:
        return 0.0
    shared = question_terms & _terms(sentence)
    # Longer shared terms are rarer and say more (Chinese words, product names).
    return sum(min(len(term), 4) for term in shared) / sum(min(len(term), 4) for term in question_terms)


def render(text: str, spans: list[tuple[int, int]]) -> str:
    parts: list[str] = []
    cursor = 0
    for start, end in sorted(spans):
        parts += [escape(text[cursor:start]), "<mark>", escape(text[start:end]), "</mark>"]
        cursor = end
    parts.append(escape(text[cursor:]))
    return "".join(parts)


def highlight(*, question: str, text: str, embed_model: str | None = None) -> Highlight:
    """Mark the best-matching sentence (and a second one when nearly as good).

    Scores mix word overlap with the question and, when ``embed_model`` is given, the embedding
    similarity of each sentence to the question (catches paraphrases with no shared word)."""
    spans = sentence_spans(text)
    if not spans:
        return Highlight(spans=[], html=escape(text))
    sentences = [text[start:end] for start, end in spans]
    question_terms = _terms(question)
    scores = np.array([_lexical(question_terms, sentence) for sentence in sentences])
    # Embeddings only when no sentence shares a word with the question (a pure paraphrase): they
    # cost a model call per sentence, while word overlap settles most questions for free.
    if embed_model and len(sentences) > 1 and not scores.any():
        embedder = get_embedder(embed_model)
        similarity = embedder.embed_passages(sentences) @ embedder.embed_queries([question])[0]
        spread = similarity.max() - similarity.min()
        scores = scores + (similarity - similarity.min()) / spread if spread > 0 else scores
    order = np.argsort(-scores, kind="stable")
    best = [int(order[0])]
    if len(order) > 1 and scores[order[1]] >= 0.85 * scores[order[0]] > 0:
        best.append(int(order[1]))
    chosen: list[tuple[int, int]] = []
    for start, end in sorted(spans[index] for index in best[:MAX_SPANS]):
        if chosen and not text[chosen[-1][1]:start].strip():  # neighbours: one mark, not two
            chosen[-1] = (chosen[-1][0], end)
        else:
            chosen.append((start, end))
    return Highlight(spans=chosen, html=render(text, chosen))
