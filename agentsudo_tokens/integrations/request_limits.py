"""A token's limits on an HTTP request: each argument read where the route declares it.

    arguments = await request_arguments(request, limits.arguments(scope))
    limits.check(scope, arguments, agent=agent.name)       # LimitExceededError: a 403

A limited name is the name of an argument the endpoint (or one of its
dependencies) takes, as ``@sudo`` binds a function's parameters. Its value is
read only from the place the route's FastAPI ``Dependant`` says FastAPI will
take it from, by the key FastAPI reads: a path, query, header or cookie
parameter by its alias; a field of the JSON body model (by the field's
alias); an embedded body parameter (``Body(embed=True)``, or one of several)
as ``body[alias]``, and a field of its model as ``body[alias][field_alias]``;
a form field from the form FastAPI parsed (``request.form()``, read once and
kept by Starlette). A name the route does not declare is missing, whatever
the request carries, and so is one it declares but the request does not give
(the route's default is not the request's word): a missing constrained
argument is a denial.

Why the raw request, read this strictly, and not the values FastAPI validates:
a dependency runs before FastAPI validates the endpoint's own arguments
(``solve_dependencies`` solves sub-dependencies first), so those values do
not exist yet when ``require_scope`` decides; reaching them would mean
wrapping the endpoint or calling FastAPI's internal extraction functions,
whose signatures change between the versions we support. Reading the very
keys FastAPI reads, and nothing looser, leaves no decoy: a text parameter
declared ``int`` (``float``, ``Decimal``) is a number only when it is a plain
decimal (``100``, ``-2``, ``99.5``; not ``1e3``, ``0x10``, ``NaN``, `` 100``,
which stay text and fail any bound); JSON values keep their JSON type
(``"50"`` is not 50). A validator that changes a value is not seen: to check
what the code finally gets, guard that code with ``@sudo``. What cannot be
located for sure (an ``AliasPath``, a parameter model's fields) is missing.
A key given twice (the query, a header, a form, the JSON at any depth), two
alias choices given at once, or one name declared in two places with two
values is refused.
"""

from __future__ import annotations

import email.message
import json
import re
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from starlette.requests import Request

from .request_plan import Source, route_plan

__all__ = ["AmbiguousArgument", "request_arguments"]

_INTEGER = re.compile(r"[+-]?[0-9]{1,15}").fullmatch
_DECIMAL = re.compile(r"[+-]?[0-9]{1,15}(?:\.[0-9]{1,15})?").fullmatch
_MISSING: Any = object()  # an argument the request does not give
_UNREAD: Any = object()


class AmbiguousArgument(Exception):
    """An argument the request gives in two ways (twice in the query, body and path, ...)."""

    def __init__(self, name: str, where: str) -> None:
        super().__init__(f"{name} is given {where}; the token limits it")
        self.name = name


def _parsed(text: Any, kind: str | None) -> Any:
    """A parameter's text as the endpoint sees it: a number where it is declared one."""
    if not isinstance(text, str):
        return text  # an uploaded file: no bound or list accepts it
    if kind == "int":
        return int(text) if _INTEGER(text) else text  # text: never a number to a bound
    if kind == "number":
        return Decimal(text) if _DECIMAL(text) else text
    return text


class _DuplicateKey(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found = dict(pairs)
    if len(found) != len(pairs):
        raise _DuplicateKey("a key given twice")
    return found


def _json_content(request: Request) -> bool:
    """FastAPI's own test: a body is JSON when its content type says so."""
    content_type = request.headers.get("content-type")
    if not content_type:
        return False
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


class _Reader:
    """One request's arguments, each read from its source; the body parsed once."""

    def __init__(self, request: Request) -> None:
        self.request = request
        self._body: Any = _UNREAD
        self._form: Any = _UNREAD

    async def body(self) -> Any:
        """The JSON body as FastAPI reads it (which has read it before any dependency runs).

        :raises AmbiguousArgument: a key given twice, at any depth.
        """
        if self._body is _UNREAD:
            self._body = _MISSING
            raw = await self.request.body() if _json_content(self.request) else b""
            if raw:
                try:
                    self._body = json.loads(raw, object_pairs_hook=_no_duplicates)
                except _DuplicateKey:
                    raise AmbiguousArgument("a field", "twice in the JSON body") from None
                except (ValueError, RecursionError):  # FastAPI answers 422 for it anyway
                    pass
        return self._body

    async def form(self) -> Any:
        """The form FastAPI parsed for the route (Starlette keeps it on the request)."""
        if self._form is _UNREAD:
            self._form = await self.request.form()
        return self._form

    async def value(self, name: str, source: Source) -> Any:
        """The argument from ``source``, or ``_MISSING``.

        :raises AmbiguousArgument: given twice, or by two of its keys.
        """
        request, where = self.request, source.where
        if where == "body":
            node = await self.body()
            for keys in source.keys:
                node = _one_key(name, node, keys)
            return node
        found: dict[str, list[Any]] = {}
        if where in ("path", "cookie"):
            named: Mapping[str, Any] = request.path_params if where == "path" else request.cookies
            found = {key: [str(named[key])] for key in source.keys[0] if key in named}
        else:
            values: Any = {
                "query": request.query_params,
                "header": request.headers,
                "form": await self.form() if where == "form" else None,
            }[where]
            for key in source.keys[0]:
                texts = values.getlist(key)
                if texts and not (where == "form" and texts == [""]):  # FastAPI: "" is unset
                    found[key] = texts
        if len(found) > 1:
            raise AmbiguousArgument(name, f"by two names ({', '.join(sorted(found))})")
        if not found:
            return _MISSING
        (given,) = found.values()
        if source.many:
            return [_parsed(text, source.kind) for text in given]
        if len(given) > 1:
            raise AmbiguousArgument(name, f"more than once in the {where}")
        return _parsed(given[0], source.kind)


def _one_key(name: str, node: Any, keys: tuple[str, ...]) -> Any:
    """``node[key]`` for the one key of ``keys`` it holds; ``_MISSING`` when none."""
    if not isinstance(node, dict):
        return _MISSING
    found = [key for key in keys if key in node]
    if len(found) > 1:
        raise AmbiguousArgument(name, f"by two names ({', '.join(found)}) in the body")
    return node[found[0]] if found else _MISSING


async def request_arguments(request: Request, names: Iterable[str]) -> dict[str, Any]:
    """The arguments ``names`` as the route takes them from the request; a name the
    route does not declare, or the request does not give, is left out (missing).

    :raises AmbiguousArgument: an argument given twice, by two of its keys, or in two
        places with two values.
    """
    plan = route_plan(request)
    reader = _Reader(request)
    found: dict[str, Any] = {}
    for name in names:
        value, where = _MISSING, ""
        for source in plan.get(name, ()):
            given = await reader.value(name, source)
            if given is _MISSING:  # one of the places the code reads is left to its default
                value = _MISSING
                break
            if value is not _MISSING and not _same(value, given):
                raise AmbiguousArgument(
                    name, f"in the {where} and the {source.where} with two values"
                )
            value, where = given, source.where
        if value is not _MISSING:
            found[name] = value
    return found


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and bool(a == b)
