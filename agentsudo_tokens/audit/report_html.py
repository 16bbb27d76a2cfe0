"""The audit report as one HTML page: tables and an inline SVG chart, no script.

    html_text = render_html(build_report(trail))

Every value from the trail is escaped (``html.escape``, quotes too) where it
is written, and the page's Content-Security-Policy allows no script at all, so
an agent name or an argument holding markup shows as text.
"""

from __future__ import annotations

import html
from typing import Any

from .report import OUTCOMES, Report, buckets

__all__ = ["render_html"]

_COLOURS = {
    "allowed": "#2e7d32",
    "denied": "#c62828",
    "audit_violation": "#ef6c00",
    "approved": "#1565c0",
    "refused": "#6a1b9a",
}
_STYLE = (
    "body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;max-width:72em}"
    "table{border-collapse:collapse;margin:.5em 0 1.5em}"
    "td,th{border:1px solid #ccc;padding:.2em .5em;text-align:left;vertical-align:top}"
    "th{background:#f3f3f3}.bad{color:#b00020;font-weight:bold}.ok{color:#2e7d32}"
    "code{word-break:break-all}"
)


def _e(value: object) -> str:
    """Trail text as HTML text or attribute value."""
    return html.escape("-" if value is None or value == "" else str(value), quote=True)


def _table(headers: list[str], rows: list[list[str]]) -> str:
    """A table; ``rows`` hold HTML already escaped."""
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _chart(report: Report, width: int = 720, height: int = 180) -> str:
    """Decisions over time as stacked bars, each with a title naming its counts."""
    data = buckets(report)
    if not data:
        return "<p>No decisions in this period.</p>"
    top = max(sum(counts.values()) for _, _, counts in data) or 1
    bar = width / len(data)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + 40}" '
        f'role="img" aria-label="decisions over time">'
    ]
    for index, (start, size, counts) in enumerate(data):
        x, y = index * bar, float(height)
        label = f"{start.isoformat().replace('+00:00', 'Z')} ({size} s): " + ", ".join(
            f"{o} {counts[o]}" for o in OUTCOMES if counts[o]
        )
        parts.append(f"<g><title>{_e(label)}</title>")
        for outcome in OUTCOMES:
            tall = counts[outcome] / top * height
            if tall <= 0:
                continue
            y -= tall
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(bar - 1, 1):.1f}" '
                f'height="{tall:.1f}" fill="{_COLOURS[outcome]}"/>'
            )
        parts.append("</g>")
    first, last = data[0][0], data[-1][0]
    parts.append(
        f'<text x="0" y="{height + 15}" font-size="11">{_e(first.isoformat()[:16])}</text>'
        f'<text x="{width}" y="{height + 15}" font-size="11" text-anchor="end">'
        f"{_e(last.isoformat()[:16])}</text>"
        f'<text x="0" y="{height + 32}" font-size="11">max {top} per bar</text>'
    )
    legend_x = 120
    for outcome in OUTCOMES:
        parts.append(
            f'<rect x="{legend_x}" y="{height + 23}" width="10" height="10" '
            f'fill="{_COLOURS[outcome]}"/><text x="{legend_x + 14}" y="{height + 32}" '
            f'font-size="11">{_e(outcome)}</text>'
        )
        legend_x += 110
    parts.append("</svg>")
    return "".join(parts)


def _files(report: Report) -> str:
    rows = []
    for state in report.files:
        good = state.chain_ok is True
        chain = f'<span class="{"ok" if good else "bad"}">{_e(state.chain)}</span>'
        rows.append([f"<code>{_e(state.path)}</code>", str(state.events), chain])
    return _table(["file", "events in range", "hash chain"], rows)


def _agents(report: Report) -> str:
    rows = []
    for agent, scopes in report.agents.items():
        for scope, counts in scopes.items():
            numbers = [str(counts.get(o, 0)) for o in OUTCOMES]
            rows.append([_e(agent), f"<code>{_e(scope)}</code>", *numbers])
    return _table(["agent", "scope", *OUTCOMES], rows) if rows else "<p>No decisions.</p>"


def _rows(items: list[dict[str, Any]], keys: list[str]) -> list[list[str]]:
    return [[_e(item.get(k)) for k in keys] for item in items]


def _shown(total: int, listed: int) -> str:
    return f"<p>{total} in all; the latest {listed} listed.</p>" if total > listed else ""


def render_html(report: Report) -> str:
    """The whole page, every trail value escaped."""
    status = (
        '<p class="ok">Every file was read whole and its hash chain holds.</p>'
        if report.ok
        else f'<p class="bad">This trail has {len(report.problems)} problem(s): the counts '
        "below leave out what could not be read, and a broken chain means it may have been "
        "changed.</p>"
    )
    problems = "".join(f"<li>{_e(p)}</li>" for p in report.problems)
    approvals = []
    for row in report.approvals:
        answer = "approved" if row["approved"] else "refused"
        cells = _rows([row], ["time", "agent", "scope", "function"])[0]
        approvals.append([*cells, _e(answer), _e(row["by"]), _e(row["reason"]), _e(row["source"])])
    denials = _rows(report.denials, ["time", "agent", "scope", "function", "reason"])
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "style-src 'unsafe-inline'; img-src data:\">"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>agentsudo audit report</title><style>{_STYLE}</style></head><body>"
        "<h1>agentsudo audit report</h1>"
        f"<p>Generated {_e(report.generated)}; events since {_e(report.since or 'the start')}."
        f"</p>{status}"
        + (f"<h2>Problems</h2><ul>{problems}</ul>" if problems else "")
        + f"<h2>Audit files</h2>{_files(report)}"
        + f"<h2>Decisions over time</h2>{_chart(report)}"
        + f"<h2>Who did what</h2>{_agents(report)}"
        + f"<h2>Denials</h2>{_shown(report.denials_total, len(report.denials))}"
        + (
            _table(["time", "agent", "scope", "function", "reason"], denials)
            if denials
            else "<p>None.</p>"
        )
        + f"<h2>Approvals</h2>{_shown(report.approvals_total, len(report.approvals))}"
        + (
            _table(
                ["time", "agent", "scope", "function", "answer", "by", "reason", "from"],
                approvals,
            )
            if approvals
            else "<p>None.</p>"
        )
        + "</body></html>\n"
    )
