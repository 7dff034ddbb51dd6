"""A readable diff of FAQ text for people: sentence by sentence, not character by character."""

from __future__ import annotations

import difflib
import re

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

# After a sentence end (Chinese or Latin punctuation) or at a line break.
_SENTENCE_END = re.compile(r"(?<=[。！？!?；;])|(?<=[.](?=\s))|\n")


def sentences(text: str) -> list[str]:
    return [part.strip() for part in _SENTENCE_END.split(text or "") if part and part.strip()]


def sentence_diff_html(old: str, new: str) -> SafeString:
    """An ordered list of sentences: unchanged, removed (<del>) or added (<ins>); everything escaped."""
    before, after = sentences(old), sentences(new)
    rows: list[tuple[str, str]] = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=before, b=after, autojunk=False).get_opcodes():
        if op == "equal":
            rows += [("same", text) for text in before[i1:i2]]
            continue
        rows += [("removed", text) for text in before[i1:i2]]
        rows += [("added", text) for text in after[j1:j2]]
    items = format_html_join(
        "", '<li class="{}">{}</li>',
        ((kind, format_html("<del>{}</del>", text) if kind == "removed" else
          format_html("<ins>{}</ins>", text) if kind == "added" else text) for kind, text in rows))
    return format_html('<ol class="sentence-diff">{}</ol>', items)
