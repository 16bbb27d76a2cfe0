"""Run code as a sub-agent: a session of a token delegated from the agent acting now.

    from agentsudo_tokens.guard.sub_agent import sub_agent, sub_agent_session

    @sub_agent("Summarizer", scopes=["read:orders"], ttl=300)
    def summarize(question: str) -> str:      # each call: its own delegated token
        return summarizer.invoke(question)    # its @sudo tools see agent 'Summarizer'

    with sub_agent_session("Summarizer", scopes=["read:orders"]):
        summarize_orders()

Each call exchanges the current agent's token at the broker (``Agent.delegate``,
RFC 8693), then runs in a session of the child: ``current_agent()`` is the
sub-agent, its ``chain`` ends with it, and every audit event says so. A call
with no signed agent acting is refused (``PermissionDeniedError``), as is a
delegation the broker refuses (``DelegationRefusedError``). ``limits=`` and
``budgets=`` narrow the child further (``Agent.delegate``). Works on plain and
``async def`` functions; a LangChain tool over ``@sub_agent`` is a tool that
hands its work to a sub-agent (``integrations.langchain``).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from ..errors import PermissionDeniedError
from .agent import Agent, current_agent

__all__ = ["delegate_current", "sub_agent", "sub_agent_session"]

F = TypeVar("F", bound=Callable[..., Any])


def delegate_current(
    name: str,
    *,
    scopes: list[str] | tuple[str, ...] | str | None = None,
    ttl: int | None = None,
    audience: str | list[str] | None = None,
    limits: list[str] | tuple[str, ...] | None = None,
    budgets: list[str] | tuple[str, ...] | None = None,
) -> Agent:
    """Sub-agent ``name`` of the agent acting now (``current_agent().delegate(...)``).

    :raises PermissionDeniedError: no agent acting; ``DelegationRefusedError`` when the
        broker refuses.
    """
    parent = current_agent()
    if parent is None:
        raise PermissionDeniedError(
            f"sub-agent {name!r}: no agent is acting to delegate from",
            agent=name,
            expected="a session of a signed agent",
            found="no session",
        )
    return parent.delegate(
        name, scopes=scopes, ttl=ttl, audience=audience, limits=limits, budgets=budgets
    )


@contextlib.contextmanager
def sub_agent_session(
    name: str,
    *,
    scopes: list[str] | tuple[str, ...] | str | None = None,
    ttl: int | None = None,
    audience: str | list[str] | None = None,
    limits: list[str] | tuple[str, ...] | None = None,
    budgets: list[str] | tuple[str, ...] | None = None,
) -> Iterator[Agent]:
    """Within this block sub-agent ``name`` acts, with a token delegated from the current agent.

    :raises PermissionDeniedError: no agent acting; ``DelegationRefusedError`` when the
        broker refuses.
    """
    child = delegate_current(
        name, scopes=scopes, ttl=ttl, audience=audience, limits=limits, budgets=budgets
    )
    with child.start_session() as acting:
        yield acting


def sub_agent(
    name: str,
    *,
    scopes: list[str] | tuple[str, ...] | str | None = None,
    ttl: int | None = None,
    audience: str | list[str] | None = None,
    limits: list[str] | tuple[str, ...] | None = None,
    budgets: list[str] | tuple[str, ...] | None = None,
) -> Callable[[F], F]:
    """Each call of the decorated function runs as sub-agent ``name`` (see the module docs);
    each call's child gets ``budgets`` carved anew from the current agent's."""
    options: dict[str, Any] = {
        "scopes": scopes, "ttl": ttl, "audience": audience, "limits": limits, "budgets": budgets,
    }  # fmt: skip

    def decorate(func: F) -> F:
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_call(*args: Any, **kwargs: Any) -> Any:
                with sub_agent_session(name, **options):
                    return await func(*args, **kwargs)

            return async_call  # type: ignore[return-value]

        @functools.wraps(func)
        def call(*args: Any, **kwargs: Any) -> Any:
            with sub_agent_session(name, **options):
                return func(*args, **kwargs)

        return call  # type: ignore[return-value]

    return decorate
