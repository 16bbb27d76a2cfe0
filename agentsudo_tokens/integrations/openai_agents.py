"""OpenAI Agents SDK tools guarded by ``@sudo``, with refusals the model can understand.

    from agents import function_tool
    from agentsudo_tokens import sudo
    from agentsudo_tokens.integrations.openai_agents import denial_message

    @function_tool(failure_error_function=denial_message)
    @sudo(scope="write:refunds")
    def issue_refund(order_id: str, amount: int) -> str:
        '''Refund part of an order.'''
        ...

``function_tool`` over ``@sudo`` needs nothing more to be guarded, sync or
``async def``: ``@sudo`` keeps the signature and docstring the SDK reads, and
the SDK runs a sync tool in a thread with a copy of the caller's context, so
the caller's session is the one checked.

Without ``denial_message`` the model is told only "An error occurred while
running the tool. Please try again." (the SDK's default), which hides the
reason and invites a retry. ``denial_message`` tells it, in one line, that
the call was refused and which scope it needs, never the scopes the agent
holds; any other error gets the SDK's default text.

A handoff to a sub-agent runs it with less than the orchestrator holds:

    from agentsudo_tokens.integrations.openai_agents import delegated_handoff

    triage = agents.Agent(name="Triage", handoffs=[
        delegated_handoff(summarizer, scopes=["read:orders"], ttl=300),
    ])
    with Agent.from_env().start_session():        # the orchestrator's token
        await Runner.run(triage, "...")

When the model hands off, the current agent's token is exchanged at the broker
(``Agent.delegate``, RFC 8693) for one of sub-agent ``name`` (default: the SDK
agent's name), and the sub-agent's function tools run in a session of that
token: their ``@sudo`` checks, the audit and ``current_agent()`` see the
sub-agent and its chain. A refused delegation fails the handoff.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from agents import Agent as SdkAgent
from agents import FunctionTool, Handoff, RunContextWrapper, handoff
from agents.tool import default_tool_error_function

from ..errors import PermissionDeniedError
from ..guard.agent import Agent

__all__ = ["delegated_handoff", "denial_message"]

_UNDER = "_agentsudo_sub_agent"  # on an SDK agent whose tools and hand-offs run as a sub-agent


def denial_message(ctx: RunContextWrapper[Any], error: Exception) -> str:
    """A ``failure_error_function``: a refusal in one line, other errors as the SDK says them.

    The line names the required scope and why the call was refused, never the
    scopes the agent holds.
    """
    denial = error if isinstance(error, PermissionDeniedError) else error.__cause__
    if not isinstance(denial, PermissionDeniedError):
        return default_tool_error_function(ctx, error)
    text = f"Permission denied: {denial}"
    if denial.scope is not None and repr(denial.scope) not in text:
        text += f" (requires scope {denial.scope!r})"
    return text


def _in_session(tool: Any, child: Agent) -> Any:
    """``tool``, run in a session of ``child`` (function tools; others as they are)."""
    if not isinstance(tool, FunctionTool):
        return tool
    invoke = tool.on_invoke_tool

    async def in_session(ctx: Any, arguments: str) -> Any:
        with child.start_session():  # a sync tool's thread gets a copy of this context
            return await invoke(ctx, arguments)

    return dataclasses.replace(tool, on_invoke_tool=in_session)


def delegated_handoff(
    agent: SdkAgent[Any],
    *,
    name: str | None = None,
    scopes: list[str] | None = None,
    ttl: int | None = None,
    audience: str | list[str] | None = None,
    **options: Any,
) -> Handoff[Any, Any]:
    """A ``handoff`` to ``agent`` whose tools run with a token delegated at hand-off time.

    :param name: the sub-agent's name in the token's chain (default ``agent.name``).
    :param options: passed to the SDK's ``handoff`` (``tool_name_override``, ...).
    :raises PermissionDeniedError: at hand-off, no agent acting; ``DelegationRefusedError``
        when the broker refuses.
    """
    import asyncio

    from ..guard.sub_agent import delegate_current
    from ..tokens.claims import check_agent_name

    made = handoff(agent, **options)
    invoke = made.on_invoke_handoff
    actor = name or agent.name
    check_agent_name(actor, "sub-agent")  # when the hand-off is built, not when it is used

    async def on_invoke(ctx: RunContextWrapper[Any], arguments: str) -> SdkAgent[Any]:
        target = await invoke(ctx, arguments)
        child = await asyncio.to_thread(  # an HTTP call to the broker: not on the event loop
            delegate_current, actor, scopes=scopes, ttl=ttl, audience=audience
        )
        return _under(target, child)

    return dataclasses.replace(made, on_invoke_handoff=on_invoke)


def _under(target: SdkAgent[Any], child: Agent) -> SdkAgent[Any]:
    """``target`` with everything it can do run as ``child``: its function tools, and its own
    hand-offs, which then delegate from ``child`` (a nested ``delegated_handoff`` narrows
    further) or, plain, run their target's tools as ``child`` too. Before, they ran in the
    orchestrator's session: a second hand-off had more than the first."""
    tools = [_in_session(tool, child) for tool in target.tools]
    handoffs = [_handoff_under(h if isinstance(h, Handoff) else handoff(h), child)
                for h in target.handoffs]  # fmt: skip
    under = target.clone(tools=tools, handoffs=handoffs)
    object.__setattr__(under, _UNDER, child)  # so an outer hand-off leaves it as it is
    return under


def _handoff_under(made: Handoff[Any, Any], child: Agent) -> Handoff[Any, Any]:
    invoke = made.on_invoke_handoff

    async def on_invoke(ctx: RunContextWrapper[Any], arguments: str) -> SdkAgent[Any]:
        with child.start_session():  # a nested delegated_handoff delegates from the child
            target: SdkAgent[Any] = await invoke(ctx, arguments)
        if getattr(target, _UNDER, None) is not None:
            return target  # a delegated hand-off: already run as its own sub-agent
        return _under(target, child)

    return dataclasses.replace(made, on_invoke_handoff=on_invoke)
