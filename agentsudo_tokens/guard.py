"""``@sudo``: refuse a call unless the acting agent holds the scope.

    @sudo(scope="write:refunds")
    def process_refund(order_id, amount): ...

    @sudo(scope="read:orders")
    async def list_orders(): ...

The required scope is checked when the decorator is applied. A call costs a
context look-up, a clock read and a set look-up (a memoized trie walk for
wildcard grants). Works on functions, methods, ``async def``, generators and
async generators, keeping name, signature, docstring and coroutine-ness.
"""

from __future__ import annotations

import functools
import inspect
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, Literal, ParamSpec, TypeVar, cast

from . import audit
from .agent import _Active, _active_session, _current
from .errors import ConfigError, PermissionDeniedError
from .scopes import validate_required_scope

__all__ = ["OnDeny", "sudo"]

P = ParamSpec("P")
R = TypeVar("R")
OnDeny = Literal["raise"]
_audit_allowed = audit.logger.isEnabledFor
_INFO = logging.INFO


def _refuse(scope: str, active: _Active | None, function: str) -> PermissionDeniedError:
    """Build the denial for this call. The message never lists the scopes held."""
    if active is None:
        return PermissionDeniedError(
            f"no active agent session for {function} (needs {scope!r}); "
            "start a session or set AGENTSUDO_TOKEN",
            scope=scope,
            expected=scope,
            found="no session",
        )
    name = active.agent.name
    if not active.trusted:
        return PermissionDeniedError(
            f"agent {name!r} is unsigned and this process requires signed sessions",
            agent=name,
            scope=scope,
            expected="a verified token",
            found="in-process agent",
        )
    if time.monotonic() >= active.deadline:
        return PermissionDeniedError(
            f"the session of agent {name!r} has expired (needed {scope!r} for {function})",
            agent=name,
            scope=scope,
            expected="a live session",
            found="expired session",
        )
    return PermissionDeniedError(
        f"agent {name!r} lacks scope {scope!r} for {function}",
        agent=name,
        scope=scope,
        expected=scope,
        found="not granted",
    )


def _check(scope: str, function: str) -> None:
    """The slow path: ambient agent, wildcards, expiry, untrusted sessions; raise on deny."""
    active = _active_session()
    if (
        active is not None
        and active.trusted
        and time.monotonic() < active.deadline
        and active.scopes.allows(scope)
    ):
        audit.record("allowed", active.agent, scope, function)
        return
    error = _refuse(scope, active, function)
    audit.record(
        "denied",
        active.agent if active is not None else None,
        scope,
        function,
        error.found,
    )
    raise error


def sudo(scope: str, *, on_deny: OnDeny = "raise") -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Guard a callable: the acting agent must hold ``scope``.

    :param scope: a concrete scope (no wildcard), e.g. ``"write:refunds"``.
    :param on_deny: what a denial does; ``"raise"`` raises ``PermissionDeniedError``.
    :raises InvalidScopeError: at decoration, for a scope outside the grammar or a wildcard.
    :raises ConfigError: at decoration, for an unknown ``on_deny``.
    """
    validate_required_scope(scope)
    if on_deny != "raise":
        raise ConfigError(
            f"on_deny: expected 'raise', found {on_deny!r}", expected="raise", found=on_deny
        )

    def decorate(func: Callable[P, R]) -> Callable[P, R]:
        if isinstance(func, staticmethod | classmethod):
            return type(func)(decorate(func.__func__))
        if not callable(func):
            raise ConfigError(f"@sudo expects a callable, found {type(func).__name__}")
        name = getattr(func, "__qualname__", repr(func))
        get = _current.get
        clock = time.monotonic

        def allowed() -> bool:
            active = get()
            if (
                active is not None
                and scope in active.exact
                and active.trusted
                and clock() < active.deadline
            ):
                if _audit_allowed(_INFO):
                    audit.record("allowed", active.agent, scope, name)
                return True
            return False

        if inspect.iscoroutinefunction(func):
            target = cast(Callable[..., Any], func)

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                if not allowed():
                    _check(scope, name)
                return await target(*args, **kwargs)

            wrapper: Callable[..., Any] = async_wrapper
        elif inspect.isasyncgenfunction(func):
            agen = cast(Callable[..., AsyncIterator[Any]], func)

            @functools.wraps(func)
            async def asyncgen_wrapper(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
                if not allowed():
                    _check(scope, name)
                async for item in agen(*args, **kwargs):
                    yield item

            wrapper = asyncgen_wrapper
        elif inspect.isgeneratorfunction(func):
            gen = cast(Callable[..., Iterator[Any]], func)

            @functools.wraps(func)
            def generator_wrapper(*args: Any, **kwargs: Any) -> Any:
                if not allowed():
                    _check(scope, name)
                return (yield from gen(*args, **kwargs))

            wrapper = generator_wrapper
        else:
            plain = cast(Callable[..., Any], func)

            @functools.wraps(func)
            def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
                active = get()
                if (
                    active is None
                    or scope not in active.exact
                    or not active.trusted
                    or clock() >= active.deadline
                ):
                    _check(scope, name)
                elif _audit_allowed(_INFO):
                    audit.record("allowed", active.agent, scope, name)
                return plain(*args, **kwargs)

            wrapper = sync_wrapper
        wrapper.__agentsudo_scope__ = scope  # type: ignore[attr-defined]
        return cast(Callable[P, R], wrapper)

    return decorate
