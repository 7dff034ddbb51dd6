"""Text preparation shared by indexing and querying: what goes into vectors and the full-text index."""

import hashlib
import logging
import re
import unicodedata
from functools import lru_cache

import jieba

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")

jieba.setLogLevel(logging.WARNING)


def has_cjk(text: str) -> bool:
    return bool(_CJK.search(text))


def strip_control_characters(text: str) -> str:
    return _CONTROL.sub("", text)


@lru_cache(maxsize=1)
def _jieba_ready() -> bool:
    jieba.initialize()
    return True


def segment(text: str) -> str:
    """Space-separated words for Postgres full-text search.

    Postgres' parser cannot split Chinese; jieba's search mode emits the words and their
    sub-words (支付宝 → 支付, 支付宝), so a short colloquial query still meets a long entry.
    NFKC first so full-width letters and digits index like their half-width forms."""
    text = unicodedata.normalize("NFKC", text)
    if not has_cjk(text):
        return text
    _jieba_ready()
    return " ".join(token for token in jieba.cut_for_search(text) if token.strip())


def embedding_text(*, question: str, summary: str, answer: str) -> str:
    """The passage embedded for an entry (fields chosen by measurement, see README)."""
    return "\n".join(part for part in (question, summary, answer) if part.strip())


def fulltext_text(*, question: str, summary: str, answer: str) -> str:
    return "\n".join(part for part in (question, summary, answer) if part.strip())


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
