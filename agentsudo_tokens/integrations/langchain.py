"""LangChain tools guarded by ``@sudo``, on the sync and the async path alike.

    from langchain_core.tools import tool
    from agentsudo_tokens import sudo
    from agentsudo_tokens.integrations.langchain import guard_tool

    @sudo(scope="write:refunds")      # over @tool: the tool's func and coroutine are guarded
    @tool
    def issue_refund(order_id: str, amount: int) -> str:
        '''Refund part of an order.'''
        ...

    refund_tool = guard_tool(existing_tool, "write:refunds")   # the same, as a function

A tool guarded this way checks the scope on ``invoke`` and ``ainvoke`` (the
original library wrapped only the sync ``func``, so ``ainvoke`` ran unchecked).
A refusal does not raise: the tool returns a one-line message that names the
missing scope (never the scopes the agent holds), as a ``ToolMessage`` with
``status="error"`` when called with a tool call, so the model learns that the
action is not permitted and the agent loop goes on.

``@tool`` over a ``@sudo`` function works too: the schema comes from the
signature, the description from the docstring, sync or ``async def``. There a
refusal raises ``PermissionDeniedError`` out of ``invoke``, because
``handle_tool_error`` only handles ``ToolException``; pass the tool through
``report_denials(tool)`` to turn refusals into messages instead.

A ``ScopedModel`` as ``args_schema`` is checked while LangChain parses the
arguments, before the tool runs; its refusal raises ``PermissionDeniedError``.

Only tools built from functions (``StructuredTool``, ``Tool``, ``@tool``) can be
wrapped; for a ``BaseTool`` subclass, put ``@sudo`` on its ``_run`` and ``_arun``.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from langchain_core.tools import BaseTool, StructuredTool, Tool, ToolException

from ..errors import ConfigError, PermissionDeniedError
from ..guard.decision import OnDeny
from ..guard.sudo import register_adapter, sudo

__all__ = ["ToolPermissionDenied", "guard_tool", "report_denials"]

T = TypeVar("T", bound=BaseTool)
_FUNCTION_TOOLS = (StructuredTool, Tool)


class ToolPermissionDenied(ToolException, PermissionDeniedError):
    """A guarded tool was refused; ``str()`` is the line the model sees.

    A ``ToolException`` for LangChain's ``handle_tool_error`` and still a
    ``PermissionDeniedError`` (same attributes) should it ever propagate.
    ``__cause__`` is the original refusal.
    """

    @classmethod
    def of(cls, error: PermissionDeniedError) -> ToolPermissionDenied:
        """The refusal in one line, naming the scope and never the scopes the agent holds."""
        text = f"Permission denied: {error}"
        if error.scope is not None and repr(error.scope) not in text:
            text += f" (requires scope {error.scope!r})"
        return cls(
            text, agent=error.agent, scope=error.scope, expected=error.expected, found=error.found
        )


def _reporting(func: Callable[..., Any]) -> Callable[..., Any]:
    """``func``, raising ``ToolPermissionDenied`` where it raised ``PermissionDeniedError``."""
    if inspect.iscoroutinefunction(func):

        @functools.wraps(func)
        async def async_reporting(*args: Any, **kwargs: Any) -> Any:
            try:
                return await func(*args, **kwargs)
            except PermissionDeniedError as error:
                raise ToolPermissionDenied.of(error) from error

        return async_reporting

    @functools.wraps(func)
    def reporting(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except PermissionDeniedError as error:
            raise ToolPermissionDenied.of(error) from error

    return reporting


def _handler(original: Any) -> Callable[[ToolException], Any]:
    """A ``handle_tool_error`` that reports refusals and keeps ``original`` for the rest.

    ``original`` is LangChain's flag: falsy (raise), ``True`` (the message), a
    string or a callable. When it was falsy, another ``ToolException`` is
    re-raised from here, so it still propagates, but LangChain's
    ``on_tool_error`` callback does not see it.
    """

    def handle(exc: ToolException) -> Any:
        if isinstance(exc, ToolPermissionDenied):
            return str(exc)
        if not original:  # the tool did not handle its errors before: it still does not
            raise exc
        if original is True:
            return exc.args[0] if exc.args else "Tool execution error"
        if isinstance(original, str):
            return original
        return original(exc)

    return handle


def _function_tool(tool: BaseTool, what: str) -> StructuredTool | Tool:
    if not isinstance(tool, _FUNCTION_TOOLS) or (tool.func is None and tool.coroutine is None):
        raise ConfigError(
            f"{what} expects a tool built from a function (StructuredTool, Tool, @tool), "
            f"found {type(tool).__name__}; for a BaseTool subclass, put @sudo on its "
            "_run and _arun methods",
            expected="StructuredTool or Tool",
            found=type(tool).__name__,
        )
    return tool


def _rewrap(tool: T, wrap: Callable[[Callable[..., Any]], Callable[..., Any]], what: str) -> T:
    """A copy of ``tool`` with ``wrap`` applied to its func and coroutine, reporting refusals."""
    fn = _function_tool(tool, what)
    update: dict[str, Any] = {"handle_tool_error": _handler(tool.handle_tool_error)}
    if fn.func is not None:
        update["func"] = wrap(fn.func)
    if fn.coroutine is not None:
        update["coroutine"] = wrap(fn.coroutine)
    return tool.model_copy(update=update)


def report_denials(tool: T) -> T:
    """A copy of ``tool`` that returns a refusal to the model instead of raising it.

    For ``@tool`` over ``@sudo`` (tools from ``guard_tool`` already do this):
    a ``PermissionDeniedError`` from the tool's function becomes its output,
    one line naming the missing scope. Other errors are handled as before.

    :raises ConfigError: ``tool`` is not built from a function.
    """
    return _rewrap(tool, _reporting, "report_denials")


def guard_tool(tool: T, scope: str, *, on_deny: OnDeny = "raise") -> T:
    """A copy of ``tool`` whose sync and async functions are guarded by ``@sudo(scope)``.

    What ``@sudo(scope=...)`` does when applied to a tool. The original tool
    is left as it was. Approvers see the arguments of the tool's function by
    name. A refusal is returned to the model as the tool's output, one line
    naming the missing scope; with a tool call it is a ``ToolMessage`` with
    ``status="error"``.

    A tool with only a sync ``func`` is guarded under ``ainvoke`` too:
    LangChain runs it in an executor with a copy of the caller's context, so
    the caller's session is the one checked.

    :raises InvalidScopeError: ``scope`` is outside the grammar or a wildcard.
    :raises ConfigError: ``tool`` is not built from a function, or ``on_deny`` is unknown.
    """
    guard = sudo(scope, on_deny=on_deny)
    return _rewrap(tool, lambda func: _reporting(guard(func)), "@sudo")


def _adapt(tool: Any, scope: str, on_deny: OnDeny) -> Any:
    """``@sudo(scope)`` applied to a LangChain tool (registered with the guard below)."""
    return guard_tool(tool, scope, on_deny=on_deny)


register_adapter("langchain_core.tools", _adapt)
