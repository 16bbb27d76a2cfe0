"""Scope grammar and matching.

    granted = ScopeSet.parse(["read:*", "write:refunds"])
    granted.allows("read:orders")        # True
    granted.allows("read:orders:items")  # False: `*` is exactly one segment

``scope := segment (":" segment)*`` with segments ``[A-Za-z0-9_.-]+``. A
granted scope may use ``*`` for exactly one segment and ``**`` (last segment
only) for one or more. A required scope is concrete. A ``ScopeSet`` is
compiled once: exact scopes in a frozenset, wildcards in a small trie.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from ..errors import InvalidScopeError

__all__ = [
    "MAX_SCOPE_LENGTH",
    "ScopeSet",
    "covered",
    "parse_scope_claim",
    "validate_required_scope",
]

MAX_SCOPE_LENGTH = 200
MAX_SEGMENTS = 16
MAX_SCOPES = 256
_SEGMENT = re.compile(r"[A-Za-z0-9_.\-]+")
_MEMO_LIMIT = 1024


def _check(scope: object, *, wildcards: bool) -> tuple[str, ...]:
    """Validate one scope and return its segments."""
    if not isinstance(scope, str):
        raise InvalidScopeError(
            f"expected a scope string, found {type(scope).__name__}",
            expected="str",
            found=type(scope).__name__,
        )
    if not scope or len(scope) > MAX_SCOPE_LENGTH:
        raise InvalidScopeError(
            f"expected a scope of 1 to {MAX_SCOPE_LENGTH} characters, found {len(scope)}",
            expected=f"1..{MAX_SCOPE_LENGTH} characters",
            found=len(scope),
        )
    segments = tuple(scope.split(":"))
    if len(segments) > MAX_SEGMENTS:
        raise InvalidScopeError(
            f"expected at most {MAX_SEGMENTS} segments in a scope, found {len(segments)}",
            expected=MAX_SEGMENTS,
            found=len(segments),
        )
    last = len(segments) - 1
    for index, segment in enumerate(segments):
        if segment == "*" or segment == "**":
            if not wildcards:
                raise InvalidScopeError(
                    f"a required scope must be concrete, found wildcard in {scope!r}",
                    expected="concrete scope",
                    found=scope,
                )
            if segment == "**" and index != last:
                raise InvalidScopeError(
                    f"'**' may only be the last segment, found {scope!r}",
                    expected="'**' last",
                    found=scope,
                )
        elif _SEGMENT.fullmatch(segment) is None:
            raise InvalidScopeError(
                f"expected segments of [A-Za-z0-9_.-] separated by ':', found {scope!r}",
                expected="[A-Za-z0-9_.-]+ segments",
                found=scope,
            )
    return segments


def validate_required_scope(scope: object) -> str:
    """Check a scope that a guard requires: valid and concrete (no wildcard).

    :raises InvalidScopeError: when it is not.
    """
    _check(scope, wildcards=False)
    assert isinstance(scope, str)
    return scope


_SEG = r"(?:[A-Za-z0-9_.\-]+|\*)"
_ONE_SCOPE = rf"(?:{_SEG}:)*(?:{_SEG}|\*\*)"
_CLAIM = re.compile(rf"{_ONE_SCOPE}(?: {_ONE_SCOPE})*")


def parse_scope_claim(claim: str) -> tuple[str, ...]:
    """Split a ``scope`` claim (single ASCII spaces between scopes) and validate each.

    :raises InvalidScopeError: for an empty claim, doubled or edge spaces, bad scopes.
    """
    if not claim:
        raise InvalidScopeError("expected at least one scope, found none", expected=">=1", found=0)
    scopes = tuple(claim.split(" "))
    if len(scopes) > MAX_SCOPES:
        raise InvalidScopeError(
            f"expected at most {MAX_SCOPES} scopes, found {len(scopes)}",
            expected=MAX_SCOPES,
            found=len(scopes),
        )
    if _CLAIM.fullmatch(claim) is None or not all(
        len(scope) <= MAX_SCOPE_LENGTH and scope.count(":") < MAX_SEGMENTS for scope in scopes
    ):
        for scope in scopes:  # name the first offending scope
            _check(scope, wildcards=True)
        raise InvalidScopeError(  # e.g. doubled spaces
            "expected scopes separated by single spaces", expected="'a b'", found=repr(claim)
        )
    return scopes


class _Node:
    """One trie level: literal children, a `*` child, and what ends here."""

    __slots__ = ("children", "star", "end", "rest")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.star: _Node | None = None
        self.end = False  # a granted scope ends exactly here
        self.rest = False  # a granted `**` hangs here: one or more further segments

    def add(self, segments: tuple[str, ...]) -> None:
        node = self
        for segment in segments:
            if segment == "**":
                node.rest = True
                return
            if segment == "*":
                if node.star is None:
                    node.star = _Node()
                node = node.star
            else:
                node = node.children.setdefault(segment, _Node())
        node.end = True

    def match(self, segments: tuple[str, ...] | list[str], index: int) -> bool:
        if index == len(segments):
            return self.end
        if self.rest:
            return True
        child = self.children.get(segments[index])
        if child is not None and child.match(segments, index + 1):
            return True
        return self.star is not None and self.star.match(segments, index + 1)


class ScopeSet:
    """A compiled, immutable set of granted scopes.

    ``allows(scope)`` is a set look-up for exact scopes and a short trie walk
    for wildcards, remembered per required scope.
    """

    __slots__ = ("scopes", "exact", "_trie", "_memo")

    scopes: tuple[str, ...]
    exact: frozenset[str]
    _trie: _Node | None
    _memo: dict[str, bool]

    def __init__(self, scopes: Iterable[str], *, _checked: bool = False) -> None:
        unique: dict[str, None] = {}
        trie: _Node | None = None
        exact: set[str] = set()
        for scope in scopes:
            segments = tuple(scope.split(":")) if _checked else _check(scope, wildcards=True)
            if scope in unique:
                continue
            if len(unique) >= MAX_SCOPES:
                raise InvalidScopeError(
                    f"expected at most {MAX_SCOPES} scopes, found more",
                    expected=MAX_SCOPES,
                    found=">" + str(MAX_SCOPES),
                )
            unique[scope] = None
            if "*" in segments or "**" in segments:
                if trie is None:
                    trie = _Node()
                trie.add(segments)
            else:
                exact.add(scope)
        object.__setattr__(self, "scopes", tuple(unique))
        object.__setattr__(self, "exact", frozenset(exact))
        object.__setattr__(self, "_trie", trie)
        object.__setattr__(self, "_memo", {})

    @classmethod
    def parse(cls, scopes: str | Iterable[str]) -> ScopeSet:
        """Build from an iterable of scopes, or one string separated by spaces or commas.

        :raises InvalidScopeError: for any scope outside the grammar.
        """
        if isinstance(scopes, str):
            scopes = [part for part in re.split(r"[ ,]", scopes) if part]
        return cls(scopes)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("ScopeSet is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("ScopeSet is immutable")

    def __reduce__(self) -> tuple[type[ScopeSet], tuple[tuple[str, ...]]]:
        # copy, deepcopy and pickle rebuild from the scopes instead of setting slots
        return (type(self), (self.scopes,))

    @property
    def has_wildcards(self) -> bool:
        """True when some granted scope uses ``*`` or ``**``."""
        return self._trie is not None

    @property
    def grants_everything(self) -> bool:
        """True when ``**`` alone is granted."""
        return self._trie is not None and self._trie.rest

    def allows(self, scope: str) -> bool:
        """True when a granted scope covers the concrete ``scope``."""
        if scope in self.exact:
            return True
        trie = self._trie
        if trie is None:
            return False
        memo = self._memo
        known = memo.get(scope)
        if known is not None:
            return known
        allowed = trie.match(scope.split(":"), 0)
        if len(memo) < _MEMO_LIMIT:
            memo[scope] = allowed
        return allowed

    def claim(self) -> str:
        """The scopes as a ``scope`` claim: one string, single spaces."""
        return " ".join(self.scopes)

    def __iter__(self) -> Iterator[str]:
        return iter(self.scopes)

    def __len__(self) -> int:
        return len(self.scopes)

    def __contains__(self, scope: object) -> bool:
        return isinstance(scope, str) and self.allows(scope)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ScopeSet) and set(self.scopes) == set(other.scopes)

    def __hash__(self) -> int:
        return hash(frozenset(self.scopes))

    def __repr__(self) -> str:
        return f"ScopeSet({list(self.scopes)!r})"


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
