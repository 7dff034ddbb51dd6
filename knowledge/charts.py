"""The risk–coverage chart of a calibration, as inline SVG: no script, so it renders under the admin's
and the console's Content-Security-Policy alike, and in a screenshot exactly as a user sees it."""

from __future__ import annotations

from typing import Any

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

WIDTH, HEIGHT = 420, 250
LEFT, RIGHT, TOP, BOTTOM = 44, 12, 12, 50
TICKS = (0.0, 0.25, 0.5, 0.75, 1.0)
# How a calibration's evidence sources are named on its pages.
EVIDENCE_NAMES = {
    "queries": "labelled queries", "queries_left_out": "labelled queries, entry left out",
    "similar_questions": "similar questions", "similar_questions_left_out": "similar questions, entry left out",
    "reviewed_feedback": "reviewed console feedback",
    "customer_feedback_not_used": "customer thumbs (monitoring only, not used)",
}


def _x(coverage: float) -> float:
    return LEFT + coverage * (WIDTH - LEFT - RIGHT)


def _y(precision: float) -> float:
    return TOP + (1 - precision) * (HEIGHT - TOP - BOTTOM)


def _points(rows: list[dict[str, Any]], key: str) -> str:
    return " ".join(f"{_x(row['coverage']):.1f},{_y(row[key]):.1f}" for row in rows if row.get(key) is not None)


def risk_coverage_svg(*, rows: list[dict[str, Any]], target: float, threshold: float | None) -> SafeString:
    """Observed precision and its guaranteed lower bound (y) against the share auto-answered (x), one
    point per cut-off; the target as a dashed line; the chosen cut-off as a dot."""
    rows = [row for row in rows if row.get("answered")]
    ticks = format_html_join("", '<line x1="{0}" y1="{1}" x2="{2}" y2="{1}" stroke="#e3e6ec"/>'
                                 '<text x="{3}" y="{4}" font-size="10" text-anchor="end" fill="#555">{5}%</text>',
                             ((LEFT, f"{_y(v):.1f}", WIDTH - RIGHT, LEFT - 4, f"{_y(v) + 3:.1f}", int(v * 100))
                              for v in TICKS))
    xticks = format_html_join("", '<text x="{0}" y="{1}" font-size="10" text-anchor="middle" fill="#555">{2}%</text>',
                              ((f"{_x(v):.1f}", HEIGHT - BOTTOM + 14, int(v * 100)) for v in TICKS))
    chosen = next((row for row in rows if threshold is not None and abs(row["cutoff"] - threshold) < 1e-9), None)
    marker = format_html('<circle cx="{}" cy="{}" r="4" fill="#1f7a4d"><title>answer threshold {}</title></circle>',
                         f"{_x(chosen['coverage']):.1f}", f"{_y(chosen['lower_bound']):.1f}", threshold) \
        if chosen else ""
    return format_html(
        '<svg class="risk-coverage" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" '
        'aria-label="Risk-coverage: precision of auto-answers against the share auto-answered">'
        "{ticks}{xticks}"
        '<line x1="{left}" y1="{ty}" x2="{right}" y2="{ty}" stroke="#b42332" stroke-dasharray="6 4"/>'
        '<text x="{right}" y="{tly}" font-size="10" text-anchor="end" fill="#b42332">target {target}</text>'
        '<polyline fill="none" stroke="#3056d3" stroke-width="2" points="{observed}"/>'
        '<polyline fill="none" stroke="#8a4fd3" stroke-width="2" stroke-dasharray="3 3" points="{bound}"/>'
        "{marker}"
        '<text x="{mid}" y="{xl}" font-size="11" text-anchor="middle" fill="#333">share auto-answered</text>'
        '<text x="{left}" y="{legend_y}" font-size="10" fill="#3056d3">— observed precision</text>'
        '<text x="{legend2}" y="{legend_y}" font-size="10" fill="#8a4fd3">- - guaranteed (lower bound)</text>'
        "</svg>",
        w=WIDTH, h=HEIGHT, legend_y=HEIGHT - 4, ticks=ticks, xticks=xticks, left=LEFT, right=WIDTH - RIGHT,
        ty=f"{_y(target):.1f}", tly=f"{_y(target) - 4:.1f}", target=target, observed=_points(rows, "precision"),
        bound=_points(rows, "lower_bound"), marker=marker, mid=(LEFT + WIDTH - RIGHT) // 2, xl=HEIGHT - BOTTOM + 27,
        legend2=LEFT + 150,
    )


def evidence_rows(evidence: dict[str, Any]) -> list[tuple[str, dict[str, int]]]:
    """A calibration's evidence counts, named and in a fixed order (the JSON column keeps none)."""
    order = list(EVIDENCE_NAMES)
    names = sorted(evidence, key=lambda name: order.index(name) if name in order else len(order))
    return [(EVIDENCE_NAMES.get(name, name), evidence[name]) for name in names]
