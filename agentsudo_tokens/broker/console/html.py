"""Plain string templates where every value is escaped: ``fill`` escapes all it is given.

    fill("<p>{who} asks for {scope}</p>", who=agent, scope=scope)   # both html.escape'd
    fill("<ul>{items}</ul>", items=join(fill("<li>{x}</li>", x=x) for x in xs))

A value is inserted raw only when it is ``Markup``, which only this module's
functions make (from escaped values and constant templates). URLs built from
values go through ``url`` (percent-encoding), then are escaped like any value.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from urllib.parse import quote, urlencode

__all__ = ["Markup", "esc", "fill", "join", "page", "url"]


class Markup(str):
    """Text that is already HTML: escaped values in constant templates."""

    __slots__ = ()


def esc(value: object) -> Markup:
    """``value`` as HTML text (``&<>"'`` escaped); ``Markup`` as it is."""
    if isinstance(value, Markup):
        return value
    return Markup(html.escape(str(value), quote=True))


def fill(template: str, **values: object) -> Markup:
    """``template`` (a constant) with each ``{name}`` replaced by its value, escaped."""
    return Markup(template.format_map({name: esc(value) for name, value in values.items()}))


def join(parts: Iterable[Markup], separator: str = "") -> Markup:
    """Pieces of HTML, one after another."""
    return Markup(separator.join(esc(part) for part in parts))


def url(path: str, **query: str | int) -> str:
    """``path`` with each segment percent-encoded, and a query string."""
    encoded = "/".join(quote(segment, safe="") for segment in path.split("/"))
    return encoded + ("?" + urlencode(query) if query else "")


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} - agentsudo console</title>
<link rel="stylesheet" href="/console/static/console.css"></head>
<body><header><strong class="brand">agentsudo</strong>{nav}</header>
<main><h1>{title}</h1>{body}</main>
<script src="/console/static/console.js"></script></body></html>
"""
_NAV = """<nav><a href="{base}/">Approvals</a><a href="{base}/agents">Agents</a>
<a href="{base}/feed">Feed</a><a href="{base}/audit">Audit</a>
<form method="post" action="{base}/logout" class="inline">
<input type="hidden" name="csrf" value="{csrf}"><button type="submit">Log out</button></form>
<span class="who">{admin}</span></nav>"""


def page(
    title: str,
    body: Markup,
    *,
    admin: str | None = None,
    csrf: str | None = None,
    base: str = "",
) -> str:
    """A whole page; with ``admin``, ``csrf`` and ``base`` (the session's secret path),
    the navigation of a logged-in admin."""
    shown = admin is not None and csrf and base
    nav = fill(_NAV, csrf=csrf, admin=admin, base=base) if shown else Markup("")
    return fill(_PAGE, title=title, nav=nav, body=body)
