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
"""

from __future__ import annotations

from typing import Any

from agents import RunContextWrapper
from agents.tool import default_tool_error_function

from ..errors import PermissionDeniedError

__all__ = ["denial_message"]


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
