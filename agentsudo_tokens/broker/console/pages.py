"""The console's pages, as HTML built with ``html.fill`` (every value escaped).

Each function returns a page's body; ``routes`` wraps it in ``html.page``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ...tokens.revocation import iso_time
from ..audit_verify import AuditReport
from .html import Markup, fill, join, url

if TYPE_CHECKING:
    from ...state.approvals import ApprovalRequest
    from .auth import Session

__all__ = [
    "approvals_body",
    "audit_body",
    "chain_line",
    "confirm_body",
    "feed_body",
    "message_body",
]

FEED_FIELDS = ("time", "outcome", "agent", "scope", "function", "detail", "source")
_DONE = {
    "approved": "Approved: the waiting call runs, once.",
    "denied": "Denied: the waiting call is refused.",
    "revoked": "Revoked: the token is refused from now on.",
    "killed": "Kill switch on: every token of the agent issued until now is refused.",
}


def duration(seconds: float) -> str:
    """``1h 02m``, ``4m 05s``, ``12s``."""
    whole = max(0, int(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def _hidden(csrf: str) -> Markup:
    return fill('<input type="hidden" name="csrf" value="{csrf}">', csrf=csrf)


def pretty_arguments(request: ApprovalRequest) -> str | None:
    """The arguments whole, one per line, non-ASCII as ``\\u`` escapes (no look-alikes);
    ``None`` when they cannot be shown (not JSON, or nested too deep to parse)."""
    try:
        return json.dumps(json.loads(request.arguments_json), indent=2, sort_keys=True)
    except (ValueError, TypeError, RecursionError):
        return None


def chain_line(report: AuditReport | str, checked_at: float) -> Markup:
    """One line of the audit chain's state: verified or not, the last signed head."""
    if isinstance(report, str):
        return fill('<span class="bad">not verified</span>: {why}', why=report)
    when = fill(" (checked {ago} ago)", ago=duration(time.time() - checked_at))
    if not report.ok:
        return fill(
            '<span class="bad">NOT verified</span>: line {line}: {problem}{when}',
            line=report.bad_line if report.bad_line is not None else "?",
            problem=report.problem or "unknown",
            when=when,
        )
    signed = (
        fill("head signed at {at}", at=iso_time(report.last_signed_at))
        if report.last_signed_at is not None
        else Markup("no signed head yet")
    )
    return fill(
        '<span class="ok">verified</span>: {events} events, {signed}, '
        "{unsigned} lines after it{when}",
        events=report.events,
        signed=signed,
        unsigned=report.unsigned,
        when=when,
    )


def message_body(done: str | None) -> Markup:
    """The notice of an action just done (a fixed text by its code), or nothing."""
    text = _DONE.get(done or "")
    return fill('<p class="notice" role="status">{text}</p>', text=text) if text else Markup("")


_APPROVAL = """<article class="card approval" id="{anchor}">
<dl><dt>Request</dt><dd><code>{id}</code></dd>
<dt>Agent</dt><dd class="agent">{agent}</dd>{chain}
<dt>Scope</dt><dd class="scope">{scope}</dd>
<dt>Function</dt><dd class="function"><code>{function}</code></dd>
<dt>Reason</dt><dd class="reason">{reason}</dd>
<dt>Age</dt><dd>{age} (denied if unanswered in {left})</dd>
<dt>Arguments SHA-256</dt><dd><code>{digest}</code></dd></dl>
<div>Arguments (whole):</div><pre class="arguments">{arguments}</pre>
<div class="actions">{approve}
<form method="post" action="{deny}">{csrf}
<input type="text" name="reason" maxlength="1000" placeholder="reason (optional)"
 aria-label="reason for denying">
<button type="submit" class="danger" name="answer" value="deny">Deny</button></form>
</div></article>"""


_APPROVE = """<form method="post" action="{action}">{csrf}
<button type="submit" class="approve" name="answer" value="approve">Approve</button></form>"""
_UNSHOWN = (
    "(these arguments cannot be shown: not JSON, or nested too deep; "
    "what cannot be read cannot be approved here)"
)


def _approval(request: ApprovalRequest, session: Session, now: float) -> Markup:
    shown = pretty_arguments(request)
    approve = (
        fill(_APPROVE, action=url(f"{session.base}/approvals/{request.id}/approve"),
             csrf=_hidden(session.csrf))
        if shown is not None
        else Markup("")
    )  # fmt: skip
    chain = (
        fill("<dt>Chain</dt><dd>{chain}</dd>", chain=" > ".join(request.chain))
        if request.delegated
        else Markup("")
    )
    return fill(
        _APPROVAL,
        anchor=f"request-{request.id}",
        id=request.id,
        agent=request.agent,
        chain=chain,
        scope=request.scope,
        function=request.function,
        reason=request.reason or "(none given)",
        age=duration(now - request.created_at),
        left=duration(request.expires_at - now),
        digest=request.arguments_sha256,
        arguments=_UNSHOWN if shown is None else shown,
        approve=approve,
        deny=url(f"{session.base}/approvals/{request.id}/deny"),
        csrf=_hidden(session.csrf),
    )


def approvals_body(
    waiting: Sequence[ApprovalRequest], session: Session, chain: Markup, done: str | None
) -> Markup:
    """Pending approvals, each whole, with Approve and Deny; the chain's state above."""
    now = time.time()
    cards = join(_approval(request, session, now) for request in waiting)
    if not waiting:
        cards = Markup('<p class="muted">No call is waiting for an answer.</p>')
    return fill(
        """{message}<p>Audit chain: {chain}</p>
<h2>Waiting for an answer ({count})</h2>
<p class="notice" id="pending-changed" hidden>The requests changed:
<a href="{home}">reload</a>.</p>
<div id="pending" data-ids="{ids}" data-src="{src}">{cards}</div>""",
        home=url(session.base + "/"),
        src=url(session.base + "/pending"),
        message=message_body(done),
        chain=chain,
        count=len(waiting),
        ids=" ".join(request.id for request in waiting),
        cards=cards,
    )


def feed_row(event: Mapping[str, Any]) -> Markup:
    """One event of the feed as a table row (the script adds the same)."""
    cells = join(fill("<td>{value}</td>", value=event.get(name, "")) for name in FEED_FIELDS)
    outcome = event.get("outcome", "")
    return fill('<tr class="outcome-{outcome}">{cells}</tr>', outcome=outcome, cells=cells)


def feed_body(events: Sequence[Mapping[str, Any]], latest: int, skipped: int, base: str) -> Markup:
    """The latest decisions, newest first; the script adds new ones each second."""
    rows = join(feed_row(event) for event in reversed(events))
    heads = join(fill("<th>{name}</th>", name=name.capitalize()) for name in FEED_FIELDS)
    note = (
        fill('<p class="notice">The feed fell behind and skipped {n} bytes.</p>', n=skipped)
        if skipped
        else Markup("")
    )
    return fill(
        """<p class="muted" id="feed-status">new decisions appear here each second</p>{note}
<div class="scroll"><table id="feed" data-after="{latest}" data-src="{src}">
<thead><tr>{heads}</tr></thead>
<tbody>{rows}</tbody></table></div>""",
        note=note,
        latest=latest,
        src=url(base + "/feed/events"),
        heads=heads,
        rows=rows,
    )


def audit_body(
    report: AuditReport | str, checked_at: float, path: str, jwks: str = "<keys-dir>/jwks.json"
) -> Markup:
    """The audit chain's state in full; ``jwks``: the broker's public keys, for the command."""
    line = chain_line(report, checked_at)
    if isinstance(report, str):
        return fill("<p>{line}</p><p class='muted'>{path}</p>", line=line, path=path)
    return fill(
        """<p id="chain-state">{line}</p><div class="card"><dl>
<dt>File</dt><dd><code>{path}</code></dd><dt>Events</dt><dd>{events}</dd>
<dt>Signed heads</dt><dd>{heads}</dd><dt>Last signed line</dt><dd>{last}</dd>
<dt>Head signed at</dt><dd>{at}</dd><dt>Lines after it</dt><dd>{unsigned}</dd>
<dt>Chain head</dt><dd><code>{head}</code></dd><dt>Checked at</dt><dd>{checked}</dd></dl></div>
<p class="muted">Check it yourself: <code>agentsudo audit verify {path} --jwks {jwks}</code></p>""",
        line=line,
        path=path,
        jwks=jwks,
        events=report.events,
        heads=report.signed_heads,
        last=report.last_signed_line if report.last_signed_line is not None else "none",
        at=iso_time(report.last_signed_at) if report.last_signed_at is not None else "never",
        unsigned=report.unsigned,
        head=report.head,
        checked=iso_time(checked_at),
    )


def confirm_body(question: str, action: str, fields: Mapping[str, str], session: Session) -> Markup:
    """A confirmation step: the question, and a form that does it (or a way back)."""
    hidden = join(
        fill('<input type="hidden" name="{name}" value="{value}">', name=name, value=value)
        for name, value in fields.items()
    )
    return fill(
        """<div class="card"><p>{question}</p><form method="post" action="{action}">{csrf}
{hidden}<input type="hidden" name="confirm" value="yes">
<p><input type="text" name="reason" maxlength="200" placeholder="reason (optional)"
 aria-label="reason"></p>
<div class="actions"><button type="submit" class="danger">Yes, do it</button>
<a class="button" href="{back}">No, go back</a></div></form></div>""",
        question=question,
        action=url(action),
        back=url(session.base + "/agents"),
        csrf=_hidden(session.csrf),
        hidden=hidden,
    )
