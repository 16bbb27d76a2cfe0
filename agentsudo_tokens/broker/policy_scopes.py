"""Scopes within scopes: whether a scope asks for no more than a policy grants.

    scope_within("read:orders", ["read:*"])       # True
    scope_within("read:*", ["read:orders"])       # False: read:* also matches read:refunds

Wildcards count on both sides: ``Policy.grant`` refuses a requested scope that
could match a concrete scope none of the agent's grantable scopes matches.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..tokens.scopes import ScopeSet

__all__ = ["covered", "scope_within"]


def covered(asked: tuple[str, ...], granted: frozenset[tuple[str, ...]]) -> bool:
    """Whether every concrete scope that ``asked`` matches is matched by one of ``granted``."""
    if not asked:
        return () in granted
    if ("**",) in granted:
        return True
    head = asked[0]
    if head == "**":  # one or more segments of any name: only all-wildcard patterns cover them
        exact = {len(g) for g in granted if g and set(g) <= {"*"}}
        opened = [len(g) for g in granted if g and g[-1] == "**" and set(g[:-1]) <= {"*"}]
        return bool(opened) and all(n in exact for n in range(1, min(opened)))
    # a `*` is any segment, one no pattern names among them: only `*` patterns cover it
    heads = ("*",) if head == "*" else ("*", head)
    return covered(asked[1:], frozenset(g[1:] for g in granted if g and g[0] in heads))


def scope_within(scope: str, granted: Iterable[str]) -> bool:
    """True when every concrete scope ``scope`` matches is matched by some ``granted`` scope.

    ``read:orders`` is within ``read:*``; ``read:*`` is within ``read:*``, ``read:**``
    or ``**`` but not within ``read:orders``; ``a:**`` is within ``a:*`` and ``a:*:**``
    together.

    :raises InvalidScopeError: a scope outside the grammar.
    """
    patterns = ScopeSet.parse(list(granted))
    ScopeSet.parse([scope])
    return covered(tuple(scope.split(":")), frozenset(tuple(g.split(":")) for g in patterns))
