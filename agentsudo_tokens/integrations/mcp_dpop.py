"""DPoP for an MCP server: tokens bound to a key, each request with its proof (RFC 9449).

    tokens = AgentSudoTokenVerifier(Verifier.from_settings())
    server = MCPServer("orders", token_verifier=tokens, auth=tokens.auth_settings())
    app = DPoPGate(server.streamable_http_app(), tokens)      # serve this one with uvicorn

The MCP SDK reads ``Authorization: Bearer`` only, and hands its token verifier
the token alone. ``DPoPGate`` wraps the server's HTTP app: a request with
``Authorization: DPoP <token>`` has its token verified and its ``DPoP`` proof
checked (method, URL, ``ath``, the token's key, replay, optionally a nonce),
then goes on to the SDK as a Bearer request whose token the verifier knows is
admitted. A refusal is a 401 with a ``DPoP`` challenge before the SDK sees
anything. Bearer requests pass through unchanged, and the verifier refuses a
bound token among them: without the gate, a bound token is never accepted.

A client built on the SDK (whose HTTP client is ``httpx2``) signs its requests
with a request hook: ``httpx2.AsyncClient(event_hooks={"request":
[dpop_request_hook()]})``. It does not retry on ``use_dpop_nonce``; a server
behind the gate that wants nonces needs a client that does (``AgentTokenAuth``
for ``httpx``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import anyio.to_thread

from ..errors import AgentSudoError, InvalidTokenError
from ..guard.possession import ProofSigner
from ..state.replay import ReplayCacheNotSharedError
from ..tokens.dpop import DPoPKey
from ..tokens.dpop_proof import ProofVerifier
from . import dpop
from .mcp import AgentSudoAccessToken, AgentSudoTokenVerifier, _admitted

__all__ = ["DPoPGate", "dpop_request_hook"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_log = logging.getLogger("agentsudo.mcp")


class DPoPGate:
    """ASGI middleware in front of an MCP server's HTTP app: admits DPoP-bound tokens.

    :param app: ``server.streamable_http_app()`` (or any app using ``tokens``).
    :param tokens: the server's ``AgentSudoTokenVerifier``.
    :param proofs: checks the proofs; default one per verifier (its replay cache
        the verifier's store when it has one, else memory). The URL a proof must
        name is the ``proofs``' origin, else ``AGENTSUDO_DPOP_ORIGIN``, else the
        request's ``Host``.
    """

    def __init__(
        self, app: ASGIApp, tokens: AgentSudoTokenVerifier, *, proofs: ProofVerifier | None = None
    ) -> None:
        self.app = app
        self.tokens = tokens
        self.proofs = proofs if proofs is not None else dpop.default_proofs(tokens.verifier)
        self._origin: tuple[str | None] | None = None  # resolved at the first DPoP request

    def __repr__(self) -> str:
        return f"DPoPGate({self.tokens!r})"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        found = [v for n, v in scope["headers"] if n.lower() == b"authorization"]
        scheme, _, credentials = found[0].partition(b" ") if len(found) == 1 else (b"", b"", b"")
        if scheme.lower() != b"dpop":
            await self.app(scope, receive, send)  # Bearer or none: the SDK and verifier judge
            return
        token = credentials.strip().decode("latin-1")
        try:
            access = await anyio.to_thread.run_sync(self._admit, token, scope)
        except InvalidTokenError as exc:
            _log.info("MCP DPoP request refused: %s", exc)
            await self._refuse(send, exc)
            return
        except AgentSudoError as exc:  # a store or the keys out of reach: cannot decide now
            _log.warning("MCP DPoP request not checked: %s", exc)
            body = {"error": "temporarily_unavailable"}
            if isinstance(exc, ReplayCacheNotSharedError):
                body["error_description"] = dpop.UNSHARED_REPLAY
            await _send(send, 503, body, {})
            return
        headers = [(n, v) for n, v in scope["headers"] if n.lower() != b"authorization"]
        headers.append((b"authorization", b"Bearer " + token.encode("latin-1")))
        reset = _admitted.set(access)
        try:
            await self.app({**scope, "headers": headers}, receive, send)
        finally:
            _admitted.reset(reset)

    def _admit(self, token: str, scope: Scope) -> AgentSudoAccessToken:
        access = self.tokens.verified(token)
        claims = access.agent.claims
        assert claims is not None  # a verified token's agent always has its claims
        if self._origin is None:
            self._origin = (dpop.service_origin(self.proofs),)
        dpop.check_possession(self.proofs, scope, "dpop", token, claims, self._origin[0])
        return access

    async def _refuse(self, send: Send, exc: InvalidTokenError) -> None:
        nonces = self.proofs.nonces
        challenge = dpop.dpop_challenge(
            exc, "the token was refused", nonce=nonces.current() if nonces else None
        )
        body = {"error": "invalid_token", "error_description": challenge.reason}
        await _send(send, 401, body, challenge.headers)


async def _send(send: Send, status: int, body: dict[str, str], headers: dict[str, str]) -> None:
    raw = json.dumps(body).encode()
    head = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(raw))]
    head += [(k.lower().encode(), v.encode("latin-1")) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": raw})


def dpop_request_hook(key: DPoPKey | None = None) -> Callable[[Any], Awaitable[None]]:
    """An async request hook for an ``httpx``-like client (the MCP SDK's ``httpx2``) that sets
    the acting agent's ``Authorization`` (and ``DPoP`` proof) on every request it sends.

    :param key: the DPoP key; default the process's (``agentsudo run --dpop``).
    """
    signer = ProofSigner(key)

    async def sign(request: Any) -> None:
        request.headers.update(signer.headers(request.method, str(request.url)))

    return sign
