"""httpx: send the acting agent's token to the services it calls.

    client = httpx.Client(base_url="http://127.0.0.1:8000", auth=AgentTokenAuth())

    with Agent.from_token(token).start_session():
        client.post("/refunds", json={...})   # Authorization: Bearer <this session's token>

The token is read when each request is sent, not when the client is made, so
one client serves every session, thread and asyncio task, each with its own
agent. Works with ``httpx.Client`` and ``httpx.AsyncClient``. httpx drops the
header when a redirect leaves the origin; give each service its own client
with a ``base_url``, so a token goes only where it is meant to.

A token bound to a key (``cnf.jkt``, RFC 9449) is sent as ``Authorization:
DPoP <token>`` with a fresh ``DPoP`` proof per request, signed by the process's
key (``agentsudo run --dpop`` hands it over) or the ``dpop_key`` given; when a
service answers ``use_dpop_nonce``, the request is signed again with its
nonce and sent once more.
"""

from __future__ import annotations

from collections.abc import Generator

import httpx

from ..guard.possession import ProofSigner
from ..tokens.dpop import DPoPKey

__all__ = ["AgentTokenAuth"]


class AgentTokenAuth(httpx.Auth):
    """Sets ``Authorization`` to the acting agent's token at send time (and ``DPoP`` for a
    bound token).

    The acting agent is the innermost session's, else the ambient one from
    ``AGENTSUDO_TOKEN``. With no agent, or an unsigned in-process one, the
    request is not sent; nor is a bound token without its key.

    :param dpop_key: the key bound tokens are bound to; default the process's
        (``guard.possession.process_key``).
    :raises PermissionDeniedError: (when sending) no agent with a token is acting, or
        its token is bound to a key this process does not hold.
    """

    def __init__(self, *, dpop_key: DPoPKey | None = None) -> None:
        self._signer = ProofSigner(dpop_key)

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        url = str(request.url)
        request.headers.update(self._signer.headers(request.method, url))
        response = yield request
        if self._signer.retry(response.status_code, response.headers, url) and isinstance(
            request.stream,
            httpx.ByteStream,  # a body that can be sent again
        ):
            request.headers.update(self._signer.headers(request.method, url))
            yield request

    def __repr__(self) -> str:
        return "AgentTokenAuth()"
