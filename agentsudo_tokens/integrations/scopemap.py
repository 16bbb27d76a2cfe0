"""What each scope unlocks: every ``@sudo`` function and scope-guarded route, by scope.

    scope_map("billing_service").to_dict()       # a module: its guarded functions and apps
    scope_map(app).by_scope()                    # {"write:refunds": ["POST /refunds", ...]}

    $ agentsudo scopes billing_service           # the same, as JSON

A guard is anything carrying ``__agentsudo_scope__``: functions wrapped by
``@sudo`` and ``require_scope`` dependencies. A route's scopes are those of its
endpoint and of every dependency in its tree (router and route
``dependencies=`` included). Scopes a handler needs only through the functions
it calls are listed under those functions, not under the route: the map
is read from declarations, not from running code.
"""

from __future__ import annotations

import importlib
import inspect
import sys
import types
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

from ..errors import ConfigError

__all__ = ["GuardEntry", "ScopeMap", "scope_map"]

_SCOPE_ATTRIBUTE = "__agentsudo_scope__"
_MAX_DEPTH = 8  # mounts, dependency trees and nested classes deeper than this are not walked


@dataclass(frozen=True, order=True)
class GuardEntry:
    """One guard: the scope it requires, and what it guards.

    ``kind`` is ``"function"`` (``name`` is ``module.qualname``), ``"route"``
    (``name`` is ``"POST /refunds"``, ``endpoint`` the handler's ``module.qualname``)
    or ``"mcp_tool"`` (``name`` is ``"mcp:<tool name>"``).
    """

    scope: str
    kind: str
    name: str
    endpoint: str | None = None


@dataclass(frozen=True)
class ScopeMap:
    """Every guard found, sorted by scope, kind and name."""

    entries: tuple[GuardEntry, ...]

    def by_scope(self) -> dict[str, list[str]]:
        """Each scope and the names of what it unlocks."""
        grouped: dict[str, list[str]] = {}
        for entry in self.entries:
            grouped.setdefault(entry.scope, []).append(entry.name)
        return grouped

    def to_dict(self) -> dict[str, Any]:
        """``{"scopes": {scope: [names]}, "guards": [entries]}``, ready for ``json.dumps``."""
        return {
            "scopes": self.by_scope(),
            "guards": [{k: v for k, v in asdict(e).items() if v is not None} for e in self.entries],
        }


def _required(obj: object) -> str | None:
    scope = getattr(obj, _SCOPE_ATTRIBUTE, None)
    return scope if isinstance(scope, str) else None


def _qualified(func: object) -> str:
    module = getattr(func, "__module__", None) or "?"
    name = getattr(func, "__qualname__", None) or getattr(func, "__name__", None) or repr(func)
    return f"{module}.{name}"


def _functions(namespace: dict[str, Any], module: str, depth: int = 0) -> Iterator[GuardEntry]:
    """Guarded functions defined in ``module``, in a namespace and the classes defined there."""
    for value in namespace.values():
        if isinstance(value, staticmethod | classmethod):
            value = value.__func__
        elif isinstance(value, property):
            yield from _functions({"g": value.fget, "s": value.fset}, module, depth)
            continue
        if getattr(value, "__module__", None) != module:
            continue  # imported from elsewhere: listed where it is defined
        scope = _required(value)
        if scope is not None and inspect.isroutine(value):
            yield GuardEntry(scope, "function", _qualified(value))
        elif inspect.isclass(value) and depth < _MAX_DEPTH:
            yield from _functions(dict(vars(value)), module, depth + 1)


def _dependency_scopes(dependant: Any, depth: int = 0) -> Iterator[str]:
    """Scopes in a FastAPI dependency tree (``route.dependant``)."""
    if dependant is None or depth > _MAX_DEPTH:
        return
    for sub in getattr(dependant, "dependencies", ()):
        scope = _required(getattr(sub, "call", None))
        if scope is not None:
            yield scope
        yield from _dependency_scopes(sub, depth + 1)


def _flattened(routes: Iterable[Any]) -> list[Any]:
    """The routes, with routers included lazily by newer FastAPI versions expanded."""
    expand = getattr(sys.modules.get("fastapi.routing"), "iter_route_contexts", None)
    if expand is not None:
        try:
            return list(expand(list(routes)))
        except Exception:  # an unexpected shape: fall back to the routes as they are
            pass
    return list(routes)


def _routes(routes: Iterable[Any], prefix: str = "", depth: int = 0) -> Iterator[GuardEntry]:
    """Guarded routes of a Starlette or FastAPI routing table, mounts included."""
    for route in _flattened(routes):
        path = prefix + str(getattr(route, "path", None) or "")
        endpoint = getattr(route, "endpoint", None)
        inner = getattr(route, "routes", None)
        if endpoint is None:
            if inner is not None and depth < _MAX_DEPTH:  # a Mount or a Host
                yield from _routes(inner, path, depth + 1)
            continue
        scopes = list(_dependency_scopes(getattr(route, "dependant", None)))
        scope = _required(endpoint)
        if scope is not None:
            scopes.append(scope)
        methods = sorted(getattr(route, "methods", None) or ())
        verb = ",".join([m for m in methods if m != "HEAD"] or methods) or "WS"
        for required in dict.fromkeys(scopes):
            yield GuardEntry(required, "route", f"{verb} {path}", _qualified(endpoint))


def _mounted(routes: Iterable[Any], depth: int = 0) -> Iterator[int]:
    """Ids of the routing tables mounted under these routes."""
    for route in _flattened(routes):
        inner = getattr(route, "routes", None)
        if inner is not None and getattr(route, "endpoint", None) is None and depth < _MAX_DEPTH:
            yield id(inner)
            yield from _mounted(inner, depth + 1)


def _routing_table(obj: object) -> list[Any] | None:
    """The routes of an app (following ``.app`` through ASGI middleware), else ``None``."""
    try:
        for _ in range(_MAX_DEPTH):
            if obj is None or isinstance(obj, types.ModuleType):
                return None
            routes = getattr(obj, "routes", None)
            if isinstance(routes, list) and hasattr(obj, "router"):
                return routes
            obj = getattr(obj, "app", None)
    except Exception:  # an odd object's attribute failed: it is no app
        return None
    return None


def _is_mcp_server(obj: object) -> bool:
    return type(obj).__module__.startswith("mcp.") and hasattr(obj, "_tool_manager")


def _mcp_tools(server: object) -> Iterator[GuardEntry]:
    """An MCP server's guarded tools (``integrations.mcp.mcp_scope_map``), as ``tool`` entries."""
    from .mcp import mcp_scope_map

    for tool in mcp_scope_map(server):  # type: ignore[arg-type]
        if tool["scope"] is not None:
            yield GuardEntry(tool["scope"], "mcp_tool", f"mcp:{tool['name']}")


def _entries(target: object) -> Iterator[GuardEntry]:
    if _is_mcp_server(target):
        yield from _mcp_tools(target)
        return
    if isinstance(target, types.ModuleType):
        namespace = dict(vars(target))
        yield from _functions(namespace, target.__name__)
        for value in namespace.values():
            if _is_mcp_server(value):
                yield from _mcp_tools(value)
        tables = {id(t): t for t in map(_routing_table, namespace.values()) if t is not None}
        mounted = {inner for table in tables.values() for inner in _mounted(table)}
        for key, table in tables.items():
            if key not in mounted:  # an app mounted in another is listed under its mount path
                yield from _routes(table)
        return
    routes = _routing_table(target)
    if routes is not None:
        yield from _routes(routes)
    elif inspect.isclass(target):
        yield from _functions(dict(vars(target)), target.__module__)
    elif _required(target) is not None and inspect.isroutine(target):
        yield GuardEntry(str(_required(target)), "function", _qualified(target))


def _load(target: str) -> object:
    """Import ``module`` or ``module:attribute`` (dots allowed in the attribute).

    :raises ConfigError: it cannot be imported or has no such attribute.
    """
    module_name, _, attribute = target.partition(":")
    try:
        obj: object = importlib.import_module(module_name)
    except Exception as exc:  # the operator's code: any failure is a clear error
        raise ConfigError(
            f"cannot import {module_name!r}: {type(exc).__name__}: {exc}",
            expected="an importable module",
            found=module_name,
        ) from exc
    for part in filter(None, attribute.split(".")):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigError(
                f"{target!r}: {part!r} not found", expected="module:attribute", found=target
            ) from None
    return obj


def scope_map(*targets: object) -> ScopeMap:
    """Every guard in ``targets``: modules, apps, classes, functions, or ``"module:attr"`` strings.

    A module yields the ``@sudo`` functions defined in it (methods included)
    and the guarded routes of every Starlette or FastAPI app it holds.

    :raises ConfigError: a string target cannot be imported.
    """
    found: set[GuardEntry] = set()
    for target in targets:
        found.update(_entries(_load(target) if isinstance(target, str) else target))
    return ScopeMap(tuple(sorted(found)))
