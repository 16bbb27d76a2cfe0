"""What happens when a guarded call is not plainly allowed: deny, audit, or ask.

    def small_refunds_only(agent, scope, context):
        return context.arguments["amount"] < 100     # arguments bound to parameter names

    @sudo(scope="write:refunds", on_deny=small_refunds_only)
    def process_refund(order_id, amount): ...

``on_deny="raise"`` refuses; ``"log"`` (audit mode) records an
``audit_violation`` and lets the call proceed; a callable (sync or ``async
def``) approves by returning exactly ``True``, and anything else (``False``,
a truthy non-``True`` value, an exception) refuses. ``"ask"`` (or
``ask(timeout=30, notify=url)``) asks a human through the state store and
waits (see ``elevation``). An approver is asked only when a live, trusted
session lacks the scope; no session, an expired or an untrusted session is
refused without asking.
"""

from __future__ import annotations

import contextvars
import inspect
import time
from collections.abc import Awaitable, Callable
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

from ..audit import events as audit
from ..errors import ConfigError, LimitExceededError, PermissionDeniedError
from .agent import _Active, _active_session, _policy, recheck_session, refused_since
from .approval_context import ApprovalContext

if TYPE_CHECKING:
    from ..state.approvals import Verdict
    from .agent import Agent
    from .elevation import Ask

__all__ = ["ApprovalContext", "Approver", "OnDeny", "Policy"]

Approver = Callable[["Agent", str, "ApprovalContext"], bool | Awaitable[bool]]
if TYPE_CHECKING:
    OnDeny: TypeAlias = Literal["raise", "log", "ask"] | Approver | Ask
else:  # at run time without Ask: importing elevation waits until a guard asks
    OnDeny = Literal["raise", "log", "ask"] | Approver


class _Denial:
    """A call that is not plainly allowed, and why (a slotted class: the denied path is hot)."""

    __slots__ = ("active", "error", "approvable")

    def __init__(
        self, active: _Active | None, error: PermissionDeniedError, approvable: bool
    ) -> None:
        self.active = active
        self.error = error
        self.approvable = approvable  # a live, trusted session that lacks the scope


def evaluate(scope: str, function: str) -> _Denial | None:
    """``None`` when the acting agent holds ``scope`` (recorded as allowed, unless its token
    has limits on ``scope``: the guard records it once they pass); else the denial."""
    active = _active_session()
    if active is None:
        return _Denial(
            None,
            PermissionDeniedError(
                f"no active agent session for {function} (needs {scope!r}); "
                + _policy.no_session_hint(),
                scope=scope,
                expected=scope,
                found="no session",
            ),
            False,
        )
    name = active.agent.name
    if not active.trusted:
        error = PermissionDeniedError(
            f"agent {name!r} is unsigned and this process requires signed sessions",
            agent=name,
            scope=scope,
            expected="a verified token",
            found="unsigned session",
        )
        return _Denial(active, error, False)
    now = time.monotonic()
    if now >= active.deadline and now < active.expires:  # time to ask about revocation again
        refused = recheck_session(active, scope)
        if refused is not None:
            return _Denial(active, refused, False)
    if now >= active.expires:
        error = PermissionDeniedError(
            f"the session of agent {name!r} has expired (needed {scope!r} for {function})",
            agent=name,
            scope=scope,
            expected="a live session",
            found="expired session",
        )
        return _Denial(active, error, False)
    if active.scopes.allows(scope):
        limits = active.limits
        if limits is None or not limits.for_scope(scope):  # else: once its limits pass
            audit.record("allowed", active.agent, scope, function)
        return None
    error = PermissionDeniedError(
        f"agent {name!r} lacks scope {scope!r} for {function}",
        agent=name,
        scope=scope,
        expected=scope,
        found="not granted",
    )
    return _Denial(active, error, True)


def _bind(signature: inspect.Signature, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    try:
        bound = signature.bind(*args, **kwargs)
    except (TypeError, ValueError):
        return None
    bound.apply_defaults()
    return MappingProxyType(dict(bound.arguments))


async def _await(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


def _resolve_in_sync_code(result: Any) -> Any:
    """An async approver called from sync code: run it to completion here or in a helper thread."""
    if not inspect.isawaitable(result):
        return result
    import asyncio  # only async approvers need it; keeps `import agentsudo_tokens` light
    from concurrent.futures import ThreadPoolExecutor

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(_await(result))
    with ThreadPoolExecutor(max_workers=1) as pool:  # a loop is running in this thread
        runner = contextvars.copy_context().run
        return pool.submit(runner, asyncio.run, _await(result)).result()


class Policy:
    """One guard's ``on_deny``, checked when the decorator is applied."""

    __slots__ = ("mode", "approver", "elevation", "target", "_signature")

    def __init__(self, on_deny: OnDeny, target: Callable[..., Any] | None = None) -> None:
        self.approver: Approver | None = None
        self.elevation: Ask | None = None
        if isinstance(on_deny, str) and on_deny in ("raise", "log"):
            self.mode: str = on_deny
        elif (isinstance(on_deny, str) and on_deny == "ask") or _is_ask(on_deny):
            from .elevation import Ask

            self.mode = "ask"
            self.elevation = on_deny if isinstance(on_deny, Ask) else Ask()
        elif callable(on_deny):
            self.mode, self.approver = "ask", on_deny
        else:
            raise ConfigError(
                f"on_deny: expected 'raise', 'log', 'ask', ask(...) or a callable, "
                f"found {on_deny!r}",
                expected="'raise', 'log', 'ask', ask(...) or callable",
                found=repr(on_deny),
            )
        self.target = target
        self._signature: inspect.Signature | None = None  # computed once, on the first denial

    def _context(self, denial: _Denial, function: str, args: Any, kwargs: Any) -> ApprovalContext:
        arguments = None
        if self.target is not None:
            if self._signature is None:
                self._signature = inspect.signature(self.target)
            arguments = _bind(self._signature, args, kwargs)
        if arguments is None:
            raise self._refuse(denial, function, "the arguments do not fit the function")
        error = denial.error
        if isinstance(error, LimitExceededError):  # over a limit: say which, and the value
            return ApprovalContext(
                function,
                arguments,
                tuple(args),
                MappingProxyType(dict(kwargs)),
                reason=str(error),
                limit=error.limit,
                argument=error.argument,
            )
        return ApprovalContext(function, arguments, tuple(args), MappingProxyType(dict(kwargs)))

    def _refuse(self, denial: _Denial, function: str, why: str) -> PermissionDeniedError:
        error = denial.error
        agent = denial.active.agent if denial.active is not None else None
        audit.record("refused", agent, error.scope, function, why)
        if isinstance(error, LimitExceededError):  # keep the kind, the argument and the limit
            return type(error)(
                f"{error} (refused by approver: {why})",
                argument=error.argument,
                limit=error.limit,
                agent=error.agent,
                scope=error.scope,
                expected=error.expected,
                found="refused by approver",
            )
        return PermissionDeniedError(
            f"{error} (refused by approver: {why})",
            agent=error.agent,
            scope=error.scope,
            expected=error.expected,
            found="refused by approver",
        )

    def _settle_elevation(self, denial: _Denial, function: str, verdict: Verdict) -> None:
        if verdict.approved:
            self._still_valid(denial, function)
            agent = denial.active.agent if denial.active is not None else None
            audit.record("approved", agent, denial.error.scope, function, verdict.why)
            return
        raise self._refuse(denial, function, verdict.why)

    def _still_valid(self, denial: _Denial, function: str) -> None:
        """An approval came after a wait: the token may have been revoked meanwhile."""
        if denial.active is not None:
            why = refused_since(denial.active.agent)
            if why is not None:
                raise self._refuse(denial, function, f"approved, but its token is refused: {why}")

    def _settle(self, denial: _Denial, function: str, verdict: Any) -> None:
        if verdict is True:
            self._still_valid(denial, function)
            agent = denial.active.agent if denial.active is not None else None
            audit.record("approved", agent, denial.error.scope, function)
            return
        why = "said no" if verdict is False else f"answered {type(verdict).__name__}, not True"
        raise self._refuse(denial, function, why)

    def _without_asking(self, denial: _Denial, function: str) -> bool:
        """Handle what needs no approver; True when the call may proceed."""
        agent = denial.active.agent if denial.active is not None else None
        error = denial.error
        reason = str(error) if isinstance(error, LimitExceededError) else str(error.found)
        if self.mode == "log":
            audit.record("audit_violation", agent, denial.error.scope, function, reason)
            return True
        if self.mode == "raise" or not denial.approvable:
            audit.record("denied", agent, denial.error.scope, function, reason)
            raise denial.error
        return False

    def decide(self, denial: _Denial, function: str, args: Any, kwargs: Any) -> None:
        """Return when the call may proceed; raise ``PermissionDeniedError`` otherwise."""
        if self._without_asking(denial, function):
            return
        assert denial.active is not None
        context = self._context(denial, function, args, kwargs)
        if self.elevation is not None:
            try:
                asked = self.elevation.wait(denial.active.agent, str(denial.error.scope), context)
            except Exception as exc:  # the store is down, ...: refuse
                raise self._refuse(denial, function, f"cannot ask: {exc}") from exc
            return self._settle_elevation(denial, function, asked)
        assert self.approver is not None
        try:
            verdict = _resolve_in_sync_code(
                self.approver(denial.active.agent, str(denial.error.scope), context)
            )
        except Exception as exc:
            raise self._refuse(denial, function, f"approver raised {type(exc).__name__}") from exc
        self._settle(denial, function, verdict)

    async def decide_async(self, denial: _Denial, function: str, args: Any, kwargs: Any) -> None:
        """As ``decide``, never blocking the event loop: a sync approver runs in a thread."""
        if self._without_asking(denial, function):
            return
        assert denial.active is not None
        import asyncio

        context = self._context(denial, function, args, kwargs)
        agent, scope = denial.active.agent, str(denial.error.scope)
        if self.elevation is not None:
            try:
                asked = await self.elevation.wait_async(agent, scope, context)
            except Exception as exc:  # the store is down, ...: refuse
                raise self._refuse(denial, function, f"cannot ask: {exc}") from exc
            return self._settle_elevation(denial, function, asked)
        assert self.approver is not None
        try:
            if inspect.iscoroutinefunction(self.approver):
                verdict = await self.approver(agent, scope, context)
            else:
                verdict = await asyncio.to_thread(self.approver, agent, scope, context)
                if inspect.isawaitable(verdict):
                    verdict = await verdict
        except Exception as exc:
            raise self._refuse(denial, function, f"approver raised {type(exc).__name__}") from exc
        self._settle(denial, function, verdict)


def _is_ask(on_deny: object) -> bool:
    """True for an ``ask(...)`` policy; imports ``elevation`` only when one could be."""
    if on_deny is None or isinstance(on_deny, str) or callable(on_deny):
        return False
    from .elevation import Ask

    return isinstance(on_deny, Ask)
