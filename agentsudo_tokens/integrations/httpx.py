"""httpx: send the acting agent's token to the services it calls.

    client = httpx.Client(base_url="http://127.0.0.1:8000", auth=AgentTokenAuth())

    with Agent.from_token(token).start_session():
        client.post("/refunds", json={...})   # Authorization: Bearer <this session's token>

The token is read when each request is sent, not when the client is made, so
one client serves every session, thread and asyncio task, each with its own
agent. Works with ``httpx.Client`` and ``httpx.AsyncClient``. httpx drops the
header when a redirect leaves the origin; give each service its own client
with a ``base_url``, so a token goes only where it is meant to.
"""

from __future__ import annotations

from collections.abc import Generator

import httpx

from ..guard.propagation import current_token

__all__ = ["AgentTokenAuth"]


class AgentTokenAuth(httpx.Auth):
    """Sets ``Authorization: Bearer`` to the acting agent's token at send time.

    The acting agent is the innermost session's, else the ambient one from
    ``AGENTSUDO_TOKEN``. With no agent, or an unsigned in-process one, the
    request is not sent.

    :raises PermissionDeniedError: (when sending) no agent with a token is acting.
    """

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {current_token()}"
        yield request

    def __repr__(self) -> str:
        return "AgentTokenAuth()"
