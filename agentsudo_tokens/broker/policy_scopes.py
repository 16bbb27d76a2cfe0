"""Scopes within scopes: whether a scope asks for no more than a policy grants.

    scope_within("read:orders", ["read:*"])       # True
    scope_within("read:*", ["read:orders"])       # False: read:* also matches read:refunds

Wildcards count on both sides: ``Policy.grant`` refuses a requested scope that
could match a concrete scope none of the agent's grantable scopes matches.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..tokens.scopes import ScopeSet, covered

__all__ = ["covered", "scope_within"]


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
