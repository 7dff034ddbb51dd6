"""Formatting for the console templates. Only ``highlight_html`` marks anything safe, and only
the escaped-text-plus-<mark> HTML that ``chat.highlight`` produces."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django import template
from django.utils import timezone
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

register = template.Library()


@register.filter
def highlight_html(html: Any, fallback: Any = "") -> SafeString:
    """The stored highlight HTML, if it is what chat.highlight makes: escaped text and <mark> tags only.

    Escaped text holds no "<", so after removing the two tags any "<" left means the HTML came
    from somewhere else; then the plain text is shown, escaped."""
    if isinstance(html, str) and "<" not in html.replace("<mark>", "").replace("</mark>", ""):
        return mark_safe(html)  # checked above: escaped text plus <mark> only
    return escape(fallback)


@register.filter
def score(value: Any, digits: int = 3) -> str:
    return "–" if value is None else f"{float(value):.{int(digits)}f}"


@register.filter
def percent(value: Any) -> str:
    return "–" if value is None else f"{float(value) * 100:.1f}%"


@register.filter
def ms(value: Any) -> str:
    if value is None:
        return "–"
    value = float(value)
    return f"{value / 1000:.2f} s" if value >= 1000 else f"{value:.0f} ms"


@register.filter
def age(value: datetime | None) -> str:
    """Compact age: 45 s, 12 min, 5 h, 3 d."""
    if value is None:
        return ""
    seconds = max(0, int((timezone.now() - value).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


@register.filter
def get(mapping: Any, key: Any) -> Any:
    return mapping.get(key) if hasattr(mapping, "get") else None
