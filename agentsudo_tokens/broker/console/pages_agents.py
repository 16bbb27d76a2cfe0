"""The console's agents page: each agent's policy, its live tokens, its kill switch."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ...tokens.revocation import iso_time
from .html import Markup, fill, join, url
from .pages import duration, message_body

if TYPE_CHECKING:
    from ..devmode import DevPolicy
    from ..policy import Policy
    from .minted import MintedToken

__all__ = ["agents_body"]


def _listed(values: Sequence[object]) -> Markup:
    if not values:
        return Markup('<span class="muted">none</span>')
    return join((fill("<code>{v}</code>", v=value) for value in values), ", ")


def _tokens(tokens: Sequence[MintedToken], now: float, base: str) -> Markup:
    if not tokens:
        return Markup('<p class="muted">No live token minted by this broker.</p>')
    rows = join(
        fill(
            """<tr><td><code>{jti}</code></td><td>{scopes}</td><td>{issued}</td>
<td>{left}</td><td><a class="button" href="{revoke}">Revoke...</a></td></tr>""",
            jti=token.jti,
            scopes=" ".join(token.scopes),
            issued=iso_time(token.issued_at),
            left=duration(token.expires_at - now),
            revoke=url(base + "/revoke", jti=token.jti),
        )
        for token in tokens
    )
    return fill(
        """<div class="scroll"><table class="tokens"><thead><tr><th>jti</th><th>Scopes</th>
<th>Issued</th><th>Expires in</th><th></th></tr></thead><tbody>{rows}</tbody></table></div>""",
        rows=rows,
    )


def _agent(
    name: str,
    rules: Any,
    tokens: Sequence[MintedToken],
    cutoff: float | None,
    now: float,
    base: str,
) -> Markup:
    if rules is not None:
        policy = fill(
            """<dl><dt>Scopes</dt><dd>{scopes}</dd><dt>Asked of a human</dt><dd>{ask}</dd>
<dt>Longest TTL</dt><dd>{ttl}</dd><dt>Callers</dt><dd>{callers}</dd>
<dt>Audiences</dt><dd>{audiences}</dd><dt>Delegable</dt><dd>{delegable} (depth {depth})</dd>
<dt>Limits</dt><dd>{limits}</dd><dt>Budgets</dt><dd>{budgets}</dd></dl>""",
            scopes=_listed(rules.scopes),
            ask=_listed(rules.ask),
            ttl=duration(rules.max_ttl),
            callers=_listed([str(c) for c in rules.callers]),
            audiences=_listed(rules.audiences),
            delegable=_listed(rules.delegable),
            depth=rules.max_depth,
            limits=_listed(rules.limits),
            budgets=_listed(rules.budgets),
        )
    else:
        policy = Markup('<p class="muted">Not in the policy (dev mode, or removed).</p>')
    if cutoff is None:
        switch = fill(
            '<a class="button danger" href="{href}">Kill switch...</a>',
            href=url(base + "/kill", agent=name),
        )
    elif cutoff == float("inf"):
        switch = Markup('<span class="bad">Kill switch on: every token refused</span>')
    else:
        switch = fill(
            '<span class="bad">Kill switch on: tokens issued until {at} are refused</span> '
            '<a class="button danger" href="{href}">Kill switch again...</a>',
            at=iso_time(cutoff),
            href=url(base + "/kill", agent=name),
        )
    return fill(
        """<section class="card agent" id="{anchor}"><h2>{name}</h2>{policy}
<h3>Live tokens ({count})</h3>{tokens}<div class="actions">{switch}</div></section>""",
        anchor=f"agent-{name}",
        name=name,
        policy=policy,
        count=len(tokens),
        tokens=_tokens(tokens, now, base),
        switch=switch,
    )


def agents_body(
    policy: Policy | DevPolicy,
    live: Mapping[str, Sequence[MintedToken]],
    cutoffs: Mapping[str, float | None],
    done: str | None,
    base: str,
) -> Markup:
    """Every agent of the policy (and any other with live tokens): its rules, tokens, switch."""
    now = time.time()
    agents: Mapping[str, Any] = getattr(policy, "agents", {})
    names = sorted(set(agents) | set(live))
    sections = join(
        _agent(name, agents.get(name), live.get(name, ()), cutoffs.get(name), now, base)
        for name in names
    )
    admins = getattr(policy, "admins", ())
    return fill(
        "{message}<p>Admins: {admins}</p>{sections}",
        message=message_body(done),
        admins=_listed([str(a) for a in admins]) if admins else "this user (dev mode)",
        sections=sections or Markup('<p class="muted">No agent.</p>'),
    )
