"""Where a FastAPI route takes each of its arguments from: its ``Dependant``, planned once.

    plan = route_plan(request)        # name -> the places FastAPI reads it from
    plan["currency"]                  # (Source("query", (("cur",),)),)

The names are the endpoint's and its dependencies' parameter names, and the
fields of a body model. The keys are the ones FastAPI (and pydantic) read: a
parameter's alias (or its ``validation_alias``, each of an ``AliasChoices``),
a model field's alias, the field name too where the model validates by name.
A key that cannot be named (an ``AliasPath``) leaves the argument out of the
plan: it is never found, so a limit on it is a denial. See ``request_limits``.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from starlette.requests import Request

__all__ = ["Plan", "Source", "route_plan"]


@dataclass(frozen=True)
class Source:
    """Where FastAPI takes one argument from.

    ``where``: ``path``, ``query``, ``header``, ``cookie``, ``form`` or ``body``;
    ``keys``: for each level, the keys FastAPI may read it by (one of them, in
    order); no level for a body that is the argument itself. ``kind``: ``int``
    or ``number`` for a text declared numeric. ``many``: a declared sequence.
    """

    where: str
    keys: tuple[tuple[str, ...], ...]
    kind: str | None = None
    many: bool = False


Plan = dict[str, tuple[Source, ...]]


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


def _sequence(annotation: object) -> bool:
    """A parameter declared as a list, set or tuple (FastAPI reads every value given)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _sequence(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return any(_sequence(arg) for arg in typing.get_args(annotation))
    return origin in (list, set, frozenset, tuple) or annotation in (list, set, frozenset, tuple)


def _model(annotation: object) -> Any:
    """The pydantic model a body parameter is declared as (also ``Model | None``), else None."""
    from pydantic import BaseModel

    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _model(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        models = [_model(arg) for arg in typing.get_args(annotation) if arg is not type(None)]
        return models[0] if len(models) == 1 else None
    return (
        annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
    )


def _keys(name: str, info: Any, alias: str | None, config: Mapping[str, Any]) -> tuple[str, ...]:
    """The keys a field is read by, in pydantic's and FastAPI's order; none when they
    cannot be named (an ``AliasPath``)."""
    from pydantic import AliasChoices

    chosen = getattr(info, "validation_alias", None)
    if isinstance(chosen, str):
        keys = [chosen]
    elif isinstance(chosen, AliasChoices):
        if not all(isinstance(choice, str) for choice in chosen.choices):
            return ()
        keys = [str(choice) for choice in chosen.choices]
    elif chosen is not None:  # an AliasPath: a key inside a key
        return ()
    else:
        keys = [alias or getattr(info, "alias", None) or name]
    if config.get("validate_by_alias") is False:
        return (name,)
    if config.get("validate_by_name", config.get("populate_by_name", False)) and name not in keys:
        keys.append(name)
    return tuple(keys)


def _param_keys(field: Any) -> tuple[str, ...]:
    return _keys(field.name, field.field_info, field.alias, getattr(field, "config", None) or {})


def _model_fields(model: Any) -> Iterable[tuple[str, tuple[str, ...]]]:
    """Each field of a body model and the top-level keys pydantic reads it by."""
    config = model.model_config
    for name, info in model.model_fields.items():
        yield name, _keys(name, info, None, config)


def _dependants(dependant: Any, overridden: Mapping[Any, Any]) -> Iterable[Any]:
    """The route's dependant and its sub-dependencies, depth first (an overridden one is
    not what FastAPI calls: skipped, so what it declares is missing)."""
    stack, seen = [dependant], set()
    while stack:
        found = stack.pop()
        if id(found) in seen or getattr(found, "call", None) in overridden:
            continue
        seen.add(id(found))
        yield found
        stack.extend(reversed(getattr(found, "dependencies", ())))


def _plan(dependant: Any, overridden: Mapping[Any, Any]) -> Plan:
    """Every argument the route declares and where FastAPI reads it."""
    from fastapi import params

    plan: dict[str, list[Source]] = {}

    def add(name: str, source: Source) -> None:
        if all(source.keys):  # a level with no nameable key: never found
            plan.setdefault(name, []).append(source)

    body: list[Any] = []
    for found in _dependants(dependant, overridden):
        for where in ("path", "query", "header", "cookie"):
            for field in getattr(found, f"{where}_params", ()):
                annotation = getattr(field.field_info, "annotation", None)
                many = where in ("query", "header") and _sequence(annotation)
                source = Source(where, (_param_keys(field),), _numeric(annotation), many)
                add(field.name, source)
        body.extend(getattr(found, "body_params", ()))
    if not body:
        return {name: tuple(sources) for name, sources in plan.items()}
    form = any(isinstance(field.field_info, params.Form) for field in body)
    first = body[0]
    model = _model(getattr(first.field_info, "annotation", None))
    embedded = (
        len({field.name for field in body}) > 1
        or bool(getattr(first.field_info, "embed", False))
        or (form and model is None)
    )
    if not embedded:  # one body parameter: the whole body, its model's fields at the top
        if not form:
            add(first.name, Source("body", ()))
        for name, keys in _model_fields(model) if model is not None else ():
            annotation = model.model_fields[name].annotation
            add(name, Source("form" if form else "body", (keys,), _numeric(annotation)))
    else:
        for field in body:
            keys = _param_keys(field)
            annotation = getattr(field.field_info, "annotation", None)
            add(field.name, Source("form" if form else "body", (keys,), _numeric(annotation)))
            inner = _model(annotation)
            if inner is not None and not form:
                for name, field_keys in _model_fields(inner):
                    add(name, Source("body", (keys, field_keys)))
    return {name: tuple(sources) for name, sources in plan.items()}


_PLANS: dict[int, tuple[Any, Plan]] = {}  # id(route) -> (route, plan): routes are unhashable
_PLANS_KEPT = 4096


def route_plan(request: Request) -> Plan:
    """The plan of the request's route, made once per route (none without a FastAPI route)."""
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return {}
    overridden = getattr(request.scope.get("app"), "dependency_overrides", None) or {}
    if overridden:  # tests swap dependencies: what FastAPI calls changes, plan it afresh
        return _plan(dependant, overridden)
    kept = _PLANS.get(id(route))
    if kept is not None and kept[0] is route:
        return kept[1]
    plan = _plan(dependant, {})
    if len(_PLANS) >= _PLANS_KEPT:  # apps made and dropped (tests): forget them all
        _PLANS.clear()
    _PLANS[id(route)] = (route, plan)
    return plan
