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
import importlib
import inspect
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import Any, ParamSpec, TypeVar, cast

from ..audit import events as audit
from ..errors import ConfigError
from ..tokens.scopes import validate_required_scope
from .agent import _Active, _active_session, _current
from .decision import OnDeny, Policy, evaluate
from .limit_plan import Plan, Spots
from .limited import enforce, enforce_async

__all__ = ["Adapter", "OnDeny", "check_scope", "register_adapter", "sudo"]

P = ParamSpec("P")
R = TypeVar("R")
_INFO = logging.INFO
_log_enabled = audit.logger.isEnabledFor
_sinks = audit._sinks


Adapter = Callable[[Any, str, OnDeny], Any]
"""Guards one framework object (a LangChain tool, ...): ``adapter(obj, scope, on_deny)``."""

_adapters: dict[str, Adapter] = {}
# The integration that adapts a framework's objects, by the module their classes come from. It
# registers its adapter when imported; if it was not, `@sudo` loads it by this name the first
# time such an object is met, so `@sudo` over a LangChain tool needs no extra import.
_INTEGRATIONS = {"langchain_core.tools": "agentsudo_tokens.integrations.langchain"}


def register_adapter(module: str, adapter: Adapter) -> None:
    """Let ``@sudo`` guard objects whose class comes from ``module`` (or below) with ``adapter``.

    An integration calls this when imported, so the core never imports it
    (``integrations.langchain`` registers ``guard_tool`` for ``langchain_core.tools``).
    """
    _adapters[module] = adapter


def _framework_of(obj: object) -> str | None:
    """The registered or known framework module that ``obj``'s class (or a base) comes from."""
    modules = [cls.__module__ for cls in type(obj).__mro__]
    for framework in (*_adapters, *_INTEGRATIONS):
        if any(m == framework or m.startswith(framework + ".") for m in modules):
            return framework
    return None


def _adapter(framework: str) -> Adapter:
    """The adapter for ``framework``, loading its integration if it has not registered yet.

    :raises ConfigError: the integration did not register an adapter (fail closed).
    """
    adapter = _adapters.get(framework)
    if adapter is None and framework in _INTEGRATIONS:
        importlib.import_module(_INTEGRATIONS[framework])  # it registers itself
        adapter = _adapters.get(framework)
    if adapter is None:
        raise ConfigError(f"@sudo: no adapter registered for objects from {framework}")
    return adapter


def sudo(scope: str, *, on_deny: OnDeny = "raise") -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Guard a callable: the acting agent must hold ``scope``.

    :param scope: a concrete scope (no wildcard), e.g. ``"write:refunds"``.
    :param on_deny: ``"raise"`` (default) raises ``PermissionDeniedError``;
        ``"log"`` records an ``audit_violation`` and lets the call proceed;
        a callable ``(agent, scope, context) -> bool`` (sync or async) approves
        a call by returning ``True``; ``"ask"`` (or ``elevation.ask(...)``) files an
        approval request in the state store and waits for ``agentsudo approve``.
    :raises InvalidScopeError: at decoration, for a scope outside the grammar or a wildcard.
    :raises ConfigError: at decoration, for an unknown ``on_deny``.
    """
    validate_required_scope(scope)
    Policy(on_deny)  # refuse a bad on_deny now, not at the first call

    def decorate(func: Callable[P, R]) -> Callable[P, R]:
        if isinstance(func, staticmethod | classmethod):
            return type(func)(decorate(func.__func__))
        framework = _framework_of(func)
        if framework is not None:
            return cast(Callable[P, R], _adapter(framework)(func, scope, on_deny))
        if not callable(func):
            raise ConfigError(f"@sudo expects a callable, found {type(func).__name__}")
        name = getattr(func, "__qualname__", repr(func))
        policy = Policy(on_deny, func)
        get = _current.get
        clock = time.monotonic
        spots = Spots(func)

        def fast(active: _Active) -> bool:
            """The fast path: an exact scope in a live, trusted session of this context."""
            return scope in active.exact and active.trusted and clock() < active.deadline

        def over_limits(active: _Active | None, args: Any, kwargs: Any) -> Plan | None:
            """The plan when the session's limits need the full check (or a debit)."""
            if active is None or active.limits is None:
                return None
            plan = spots.plan(active.limits, scope)
            if plan is None or (not plan.budgeted and plan.passes(args, kwargs)):
                return None
            return plan

        def limited(active: _Active, args: Any, kwargs: Any) -> None:
            """A session allowed on the fast path whose token has limits: check them."""
            plan = over_limits(active, args, kwargs)
            if plan is not None:
                arguments = plan.arguments(args, kwargs)
                enforce(active, plan.limits, scope, arguments, policy, name, args, kwargs)
            if _sinks.active or _log_enabled(_INFO):
                audit.record("allowed", active.agent, scope, name)

        def check(args: Any, kwargs: Any) -> None:
            active = get()
            if active is not None and fast(active):
                if active.limits is not None:
                    limited(active, args, kwargs)
                else:
                    record(active)
                return
            slow(active, args, kwargs)

        def slow(active: _Active | None, args: Any, kwargs: Any) -> None:
            """Not on the fast path: ``evaluate`` decides, then the limits of the agent acting."""
            denial = evaluate(scope, name)  # records an allowed call itself (no limits)
            if denial is not None:
                policy.decide(denial, name, args, kwargs)
            after_evaluate(active, args, kwargs, denial is None)

        def after_evaluate(active: _Active | None, args: Any, kwargs: Any, allowed: bool) -> None:
            """The limits of the agent acting, once ``evaluate`` (or ``on_deny``) let it act;
            a call its scope allowed is recorded as allowed only once they pass."""
            if active is None:  # the ambient agent, if any
                active = _active_session()
            if active is None or active.limits is None:
                return
            plan = over_limits(active, args, kwargs)
            if plan is not None:
                arguments = plan.arguments(args, kwargs)
                enforce(active, plan.limits, scope, arguments, policy, name, args, kwargs)
            if allowed and active.limits.for_scope(scope):
                record(active)

        async def check_async(args: Any, kwargs: Any) -> None:
            active = get()
            if active is not None and fast(active):
                plan = over_limits(active, args, kwargs)
                if plan is not None:
                    arguments = plan.arguments(args, kwargs)
                    await enforce_async(
                        active, plan.limits, scope, arguments, policy, name, args, kwargs
                    )
                record(active)
                return
            denial = evaluate(scope, name)  # records an allowed call itself (no limits)
            if denial is not None:
                await policy.decide_async(denial, name, args, kwargs)
            if active is None:  # the ambient agent, if any
                active = _active_session()
            if active is None or active.limits is None:
                return
            plan = over_limits(active, args, kwargs)
            if plan is not None:
                arguments = plan.arguments(args, kwargs)
                await enforce_async(
                    active, plan.limits, scope, arguments, policy, name, args, kwargs
                )
            if denial is None and active.limits.for_scope(scope):
                record(active)

        def record(active: _Active) -> None:
            if _sinks.active or _log_enabled(_INFO):
                audit.record("allowed", active.agent, scope, name)

        if inspect.iscoroutinefunction(func):
            target = cast(Callable[..., Any], func)

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                await check_async(args, kwargs)
                return await target(*args, **kwargs)

            wrapper: Callable[..., Any] = async_wrapper
        elif inspect.isasyncgenfunction(func):
            agen = cast(Callable[..., AsyncIterator[Any]], func)

            @functools.wraps(func)
            async def asyncgen_wrapper(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
                await check_async(args, kwargs)
                async for item in agen(*args, **kwargs):
                    yield item

            wrapper = asyncgen_wrapper
        elif inspect.isgeneratorfunction(func):
            gen = cast(Callable[..., Iterator[Any]], func)

            @functools.wraps(func)
            def generator_wrapper(*args: Any, **kwargs: Any) -> Any:
                check(args, kwargs)
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
                    denial = evaluate(scope, name)  # records an allowed call itself (no limits)
                    if denial is not None:
                        policy.decide(denial, name, args, kwargs)
                    if active is None or active.limits is not None:
                        after_evaluate(active, args, kwargs, denial is None)
                elif active.limits is not None:
                    limited(active, args, kwargs)
                elif _sinks.active or _log_enabled(_INFO):
                    audit.record("allowed", active.agent, scope, name)
                return plain(*args, **kwargs)

            wrapper = sync_wrapper
        wrapper.__agentsudo_scope__ = scope  # type: ignore[attr-defined]
        return cast(Callable[P, R], wrapper)

    return decorate


def check_scope(scope: str, *, what: str, arguments: Mapping[str, Any] | None = None) -> None:
    """Refuse unless the acting agent holds ``scope`` (for guards that are not decorators).

    :param what: what is being guarded, for the message and the audit event.
    :param arguments: the call's arguments by name, checked against the limits the
        token carries on ``scope`` (a limited argument not given is refused), and
        debited from its budgets.
    :raises PermissionDeniedError: as ``@sudo`` with ``on_deny="raise"``
        (``LimitExceededError``, ``BudgetExhaustedError`` over a limit).
    """
    denial = evaluate(validate_required_scope(scope), what)
    policy = Policy("raise")
    if denial is not None:
        policy.decide(denial, what, (), {})
    active = _active_session()
    if active is not None and active.limits is not None and active.limits.for_scope(scope):
        given = dict(arguments or {})
        enforce(active, active.limits, scope, given, policy, what, (), given)
        if denial is None:  # evaluate left it to the limits: they passed
            audit.record("allowed", active.agent, scope, what)
