"""A token's limits on an HTTP request: its path and query parameters and its JSON body's fields.

    arguments = await request_arguments(request, limits.arguments(scope))
    limits.check(scope, arguments, agent=agent.name)       # LimitExceededError: a 403

The values are read as the endpoint will see them, never more loosely: a path
or query parameter the route declares as ``int`` (or ``float``, ``Decimal``)
is parsed as a plain decimal number (``100``, ``-2``, ``99.5``; nothing else,
so ``1e3``, ``0x10``, ``NaN`` or `` 100`` are refused as not numbers); any
other one stays the text it is. A parameter given twice in the query, a JSON
body with a key given twice, or an argument found in two places with two
values is refused. A body that is not a JSON object gives no arguments: a
constrained argument is then missing, which is a denial.
"""

from __future__ import annotations

import json
import re
import types
import typing
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from starlette.requests import Request

__all__ = ["AmbiguousArgument", "request_arguments"]

_INTEGER = re.compile(r"[+-]?[0-9]{1,15}").fullmatch
_DECIMAL = re.compile(r"[+-]?[0-9]{1,15}(?:\.[0-9]{1,15})?").fullmatch


class AmbiguousArgument(Exception):
    """An argument the request gives in two ways (twice in the query, body and path, ...)."""

    def __init__(self, name: str, where: str) -> None:
        super().__init__(f"{name} is given {where}; the token limits it")
        self.name = name


class _DuplicateKey(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found = dict(pairs)
    if len(found) != len(pairs):
        raise _DuplicateKey("a key given twice")
    return found


def _numeric(annotation: object) -> str | None:
    """``"int"`` or ``"number"`` for a parameter declared as one (also ``int | None``)."""
    if annotation is int:
        return "int"
    if annotation in (float, Decimal):
        return "number"
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _numeric(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        kinds = {_numeric(arg) for arg in typing.get_args(annotation) if arg is not type(None)}
        return kinds.pop() if len(kinds) == 1 else None
    return None


def _declared(request: Request) -> dict[str, str]:
    """The route's path and query parameters declared numeric: name -> ``int``/``number``."""
    dependant = getattr(request.scope.get("route"), "dependant", None)
    kinds: dict[str, str] = {}
    for field in [*getattr(dependant, "path_params", ()), *getattr(dependant, "query_params", ())]:
        info = getattr(field, "field_info", None)
        kind = _numeric(getattr(info, "annotation", None))
        if kind is not None:
            kinds[getattr(field, "alias", None) or field.name] = kind
    return kinds


def _parsed(text: str, kind: str | None) -> Any:
    """A parameter's text as the endpoint sees it: a number where it is declared one."""
    if kind == "int":
        return int(text) if _INTEGER(text) else text  # text: never a number to a bound
    if kind == "number":
        return Decimal(text) if _DECIMAL(text) else text
    return text


async def _body_fields(request: Request) -> dict[str, Any]:
    """The top-level fields of a JSON object body; empty for any other body.

    :raises AmbiguousArgument: the body gives a key twice.
    """
    body = await request.body()
    if not body:
        return {}
    try:
        data = json.loads(body, object_pairs_hook=_no_duplicates)
    except _DuplicateKey:
        raise AmbiguousArgument("a field", "twice in the JSON body") from None
    except (ValueError, RecursionError):  # not JSON, or digits past Python's limit
        return {}
    return data if isinstance(data, dict) else {}


async def request_arguments(request: Request, names: Iterable[str]) -> dict[str, Any]:
    """The arguments ``names`` as the request gives them (path, query, JSON body).

    A value that a parameter declared numeric cannot be parsed into stays
    text, which no bound accepts.

    :raises AmbiguousArgument: an argument given twice or in two places with two values.
    """
    wanted = set(names)
    kinds = _declared(request)
    found: dict[str, Any] = {}
    where: dict[str, str] = {}
    for name, text in request.path_params.items():
        if name in wanted:
            found[name], where[name] = _parsed(str(text), kinds.get(name)), "in the path"
    query = request.query_params
    for name in wanted & set(query.keys()):
        values = query.getlist(name)
        if len(values) > 1:
            raise AmbiguousArgument(name, "more than once in the query")
        _merge(found, where, name, _parsed(values[0], kinds.get(name)), "in the query")
    if wanted - set(found) or request.method not in ("GET", "HEAD", "DELETE", "OPTIONS"):
        fields = await _body_fields(request)
        for name in wanted & set(fields):
            _merge(found, where, name, fields[name], "in the body")
    return found


def _merge(found: dict[str, Any], where: dict[str, str], name: str, value: Any, at: str) -> None:
    if name in found and not _same(found[name], value):
        raise AmbiguousArgument(name, f"{where[name]} and {at} with two values")
    found[name], where[name] = value, at


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and bool(a == b)
