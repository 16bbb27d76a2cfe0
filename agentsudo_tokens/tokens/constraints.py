"""One constraint on one named argument of a guarded call, and how a value is checked.

    Constraint("amount", "le", Decimal(100)).problem(5000)   # "5000 exceeds the token's limit 100"
    Constraint("path", "under", "/srv/data").problem("/srv/data/../etc/passwd")   # refused

Kinds: numeric bounds (``le``, ``lt``, ``ge``, ``gt``), equality (``eq``) and
one-of (``in``) on numbers, strings or booleans, a path under a root
(``under``), a URL whose host is in a list (``host_in``) and a maximum length
(``max_len``). ``problem`` returns ``None`` when the value satisfies the
constraint, else the reason in words, without the argument's name; anything
unexpected about a value (a type, NaN, a NUL byte) is a problem, never a pass.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from decimal import Decimal
from pathlib import PurePath
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    "ARGUMENT",
    "BOUNDS",
    "KINDS",
    "MAX_NUMBER",
    "Constraint",
    "Value",
    "as_number",
    "shown",
]

Value = Decimal | str | bool  # what a constraint compares with: numbers are Decimals
BOUNDS = {"le": "<=", "lt": "<", "ge": ">=", "gt": ">"}
KINDS = frozenset({*BOUNDS, "eq", "in", "under", "host_in", "max_len"})
ARGUMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}").fullmatch  # a Python parameter name
MAX_NUMBER = Decimal(10) ** 12  # bounds and totals: |x| <= 10**12, at most 6 decimals
_URL_SCHEMES = frozenset({"http", "https", "ws", "wss"})
_SIZED = frozenset({str, bytes, list, tuple, dict, set, frozenset})
_UNSAFE_URL = re.compile(r"[^\x21-\x7e]|\\").search  # space, control, non-ASCII, backslash


def shown(value: object) -> str:
    """A value as a denial shows it: short and ASCII (strings quoted), else its type."""
    if isinstance(value, bool) or value is None:
        return str(value).lower() if isinstance(value, bool) else "None"
    if isinstance(value, int) and value.bit_length() > 128:  # str() of a huge int is slow or fails
        return f"an integer of {value.bit_length()} bits"
    if isinstance(value, int | float | Decimal):
        text = str(value) if not isinstance(value, float) else float.__repr__(value)
        return text if len(text) <= 40 else text[:40] + "..."
    if isinstance(value, str):
        return ascii(value[:60]) + ("..." if len(value) > 60 else "")
    return f"a {type(value).__name__}"


def as_number(value: object) -> Decimal | None:
    """``value`` as a finite Decimal; ``None`` for anything else (bools, strings, NaN, inf)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        # float's repr: 0.1 as written, not the binary value stored (and not a subclass's)
        return Decimal(float.__repr__(value)) if math.isfinite(value) else None
    if isinstance(value, Decimal):
        return value if value.is_finite() else None
    return None


def _same(value: object, wanted: Value) -> bool:
    """Equality without Python's loose rules: ``True`` is not 1, ``"1"`` is not 1."""
    if isinstance(wanted, bool):
        return isinstance(value, bool) and value is wanted
    if isinstance(wanted, Decimal):
        number = as_number(value)
        return number is not None and number == wanted
    return type(value) is str and value == wanted


def _words(value: Value) -> str:
    return shown(value) if not isinstance(value, str) else value


def _host(value: object) -> str | None:
    """The host of a web URL, lower case; ``None`` for anything that is not plainly one.

    Refused: userinfo (``https://good@evil``), a backslash, whitespace or control
    characters, non-ASCII (punycode is fine), another scheme, a bad port.
    """
    if type(value) is not str or len(value) > 4096 or _UNSAFE_URL(value):
        return None
    try:
        parts = urlsplit(value)
        _ = parts.port  # a port that is not a number is no URL
    except ValueError:
        return None
    if parts.scheme.lower() not in _URL_SCHEMES or "@" in parts.netloc:
        return None
    host = (parts.hostname or "").rstrip(".")
    return host or None


def _real(path: object) -> str | None:
    """``path`` made absolute with every ``..`` and symlink resolved; ``None`` if not a path.

    Only ``str`` and pathlib's paths (whose text cannot change between this check and
    the call's use); no ``~`` first, which a tool expanding it would read elsewhere.
    """
    if isinstance(path, PurePath):
        path = str(path)
    if type(path) is not str or not path or "\x00" in path or len(path) > 4096:
        return None
    if path.startswith("~"):
        return None
    try:
        return os.path.realpath(path)
    except (OSError, ValueError):
        return None


@dataclass(frozen=True, slots=True)
class Constraint:
    """``argument`` must satisfy ``kind`` with ``value``: a number, text, a flag, or a tuple."""

    argument: str
    kind: str
    value: Value | tuple[Value, ...] | int

    def text(self) -> str:
        """The constraint as the grammar writes it: ``amount<=100``, ``currency in USD,EUR``."""
        name, value = self.argument, self.value
        if self.kind in BOUNDS:
            return f"{name}{BOUNDS[self.kind]}{value}"
        if self.kind == "eq":
            return f"{name}={_words(value)}"  # type: ignore[arg-type]
        if self.kind == "max_len":
            return f"len({name})<={value}"
        items = ",".join(map(_words, value))  # type: ignore[arg-type]
        if self.kind == "in":
            return f"{name} in {items}"
        if self.kind == "host_in":
            return f"{name} host in {items}"
        return f"{name} under {value}"

    def problem(self, value: Any) -> str | None:
        """``None`` when ``value`` satisfies this constraint, else why not (one short phrase)."""
        kind, limit = self.kind, self.value
        if kind in BOUNDS:
            number = as_number(value)
            if number is None:
                return f"{shown(value)} is not a number"
            if kind == "le" and not number <= limit:  # type: ignore[operator]
                return f"{shown(value)} exceeds the token's limit {limit}"
            if kind == "lt" and not number < limit:  # type: ignore[operator]
                return f"{shown(value)} is not below the token's limit {limit}"
            if kind == "ge" and not number >= limit:  # type: ignore[operator]
                return f"{shown(value)} is below the token's minimum {limit}"
            if kind == "gt" and not number > limit:  # type: ignore[operator]
                return f"{shown(value)} is not above the token's minimum {limit}"
            return None
        if kind == "eq":
            if _same(value, limit):  # type: ignore[arg-type]
                return None
            return f"{shown(value)} is not the token's {_words(limit)}"  # type: ignore[arg-type]
        if kind == "in":
            if any(_same(value, item) for item in limit):  # type: ignore[union-attr]
                return None
            return f"{shown(value)} is not one of the token's {','.join(map(_words, limit))}"  # type: ignore[arg-type]
        if kind == "max_len":
            if type(value) not in _SIZED:  # exact types: a subclass's __len__ may lie
                return f"{shown(value)} has no length"
            if len(value) <= limit:  # type: ignore[operator]
                return None
            return f"its length {len(value)} exceeds the token's limit {limit}"
        if kind == "host_in":
            host = _host(value)
            if host is None:
                return f"{shown(value)} is not a plain http(s) URL"
            if host in limit:  # type: ignore[operator]
                return None
            return f"host {shown(host)} is not one of the token's {','.join(limit)}"  # type: ignore[arg-type]
        if kind == "under":
            path, root = _real(value), _real(limit)
            if path is None or root is None:
                return f"{shown(value)} is not a path"
            if path == root or path.startswith(root.rstrip(os.sep) + os.sep):
                return None
            return f"{shown(value)} is not under the token's root {limit}"
        return f"the token's limit kind {kind!r} is unknown"  # never built: parsing refuses it
