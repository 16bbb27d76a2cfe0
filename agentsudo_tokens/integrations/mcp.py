"""Agentsudo tokens as the bearer tokens of an MCP server (the official ``mcp`` SDK, 2.x).

    from mcp.server.mcpserver import MCPServer
    from agentsudo_tokens import Verifier
    from agentsudo_tokens.integrations.mcp import AgentSudoTokenVerifier, guarded_tool

    tokens = AgentSudoTokenVerifier(Verifier.from_settings())
    server = MCPServer("orders", token_verifier=tokens, auth=tokens.auth_settings())

    @guarded_tool(server, scope="read:orders")
    def list_orders(customer: str) -> list[str]: ...

    app = server.streamable_http_app()          # serve it with uvicorn

``AgentSudoTokenVerifier`` is the SDK's ``TokenVerifier``: the SDK's bearer
middleware hands it each request's ``Authorization: Bearer`` token, our
``Verifier`` checks it (signature, expiry, issuer, audience) off the event
loop, and a refused token is an HTTP 401 before any MCP message is read.

``guarded_tool`` registers a tool guarded by ``@sudo``: each call runs in a
session of the caller's verified token, so the scope check uses the caller's
grants, never the server's own. A call without the scope returns an MCP tool
error (``isError: true``) that names the required scope and never the scopes
the caller holds. Limits the caller's token carries on the scope are checked
on the tool's arguments (by ``@sudo``); over one, the error names the limit and
the value (``amount 5000 exceeds the token's limit 100 for write:refunds``).
``mcp_scope_map(server)`` lists every tool with its scope.

A process that registers guarded tools (or builds an ``AgentSudoTokenVerifier``)
serves requests, so its own ``AGENTSUDO_TOKEN`` stops acting by itself
(``disable_ambient_agent``): no call, in any thread or task, runs as the
server's agent. Without auth configured on the server, a call carries no
token, so a guarded tool refuses it unless the server opened a session
explicitly around its run loop. That is the opt-in for a stdio server started
by one agent for itself (``with Agent.from_env().start_session():
server.run("stdio")``); never do it on an HTTP transport, where anyone who can
connect would act as that agent. A ``@sudo`` function registered with plain
``server.tool()`` sees that same explicit session, or nothing, once the switch
is off: which ``guarded_tool`` or ``AgentSudoTokenVerifier`` turn it off. A
server that uses neither must call ``disable_ambient_agent()`` at start-up
itself, or its own ``AGENTSUDO_TOKEN`` answers for every caller.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import logging
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from typing import Any, TypeVar

import anyio.to_thread
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import PrivateAttr

from ..errors import (
    AgentSudoError,
    ConfigError,
    LimitExceededError,
    MalformedTokenError,
    PermissionDeniedError,
    TokenBindingError,
)
from ..guard.agent import Agent, disable_ambient_agent
from ..guard.decision import OnDeny
from ..guard.sudo import sudo
from ..tokens.scopes import validate_required_scope
from ..tokens.verifier import Verifier

__all__ = [
    "SCOPE_META_KEY",
    "AgentSudoAccessToken",
    "AgentSudoTokenVerifier",
    "caller_agent",
    "guarded_tool",
    "mcp_scope_map",
]

F = TypeVar("F", bound=Callable[..., Any])

SCOPE_META_KEY = "agentsudo/scope"
"""The key under which a guarded tool's required scope is published in the tool's ``_meta``."""

_log = logging.getLogger("agentsudo.mcp")

# Where an auth server would be named, if this server had one to name. The SDK
# publishes ``issuer_url`` only with ``resource_server_url``; ``.invalid`` can never resolve.
_UNPUBLISHED_ISSUER = "https://agentsudo.invalid"

_REASONS = {
    "not granted": "the caller's token does not grant it",
    "expired session": "the caller's token has expired",
    "no session": "no agent token came with the call",
    "unsigned session": "the caller's session is not from a verified token",
    "refused by approver": "refused by the approver",
    "ledger unavailable": "the token's budgets cannot be debited now",
}


class AgentSudoAccessToken(AccessToken):
    """The SDK's ``AccessToken`` for a verified agentsudo token; it carries the verified agent.

    The agent is a private attribute: never serialized, never sent to a client.
    """

    _agent: Agent = PrivateAttr()

    @property
    def agent(self) -> Agent:
        """The verified agent (``agent.claims`` holds the token's verified claims)."""
        return self._agent


# A DPoP-bound token whose proof ``mcp_dpop.DPoPGate`` checked for the current request.
_admitted: contextvars.ContextVar[AgentSudoAccessToken | None] = contextvars.ContextVar(
    "agentsudo_mcp_admitted", default=None
)


class AgentSudoTokenVerifier:
    """The MCP SDK's ``TokenVerifier`` protocol, backed by an agentsudo ``Verifier``.

    :param verifier: checks tokens; defaults to ``Verifier.from_settings()``
        (``AGENTSUDO_JWKS`` or the key directory, issuer and audience).
    :param required_scopes: scopes every request must carry (the SDK answers 403
        without them). Pass the same list to ``AuthSettings``, or use
        ``auth_settings()``. A wildcard grant covers them as it does for ``@sudo``.
    :raises ConfigError: no public keys to verify with.
    :raises InvalidScopeError: a required scope outside the grammar, or a wildcard.
    """

    def __init__(
        self, verifier: Verifier | None = None, *, required_scopes: Iterable[str] = ()
    ) -> None:
        self.verifier = verifier if verifier is not None else Verifier.from_settings()
        self.required_scopes = tuple(validate_required_scope(s) for s in required_scopes)
        disable_ambient_agent()  # a process that checks callers' tokens serves requests

    def __repr__(self) -> str:
        return f"AgentSudoTokenVerifier({self.verifier!r})"

    async def verify_token(self, token: str) -> AccessToken | None:
        """Verify a bearer token; ``None`` (the SDK's 401) when it is refused.

        Runs the verifier in a worker thread: a JWKS file or URL may need reading.
        A token bound to a key (DPoP) is accepted only when ``mcp_dpop.DPoPGate``
        checked its proof for this request; sent as a Bearer token it is refused.
        """
        admitted = _admitted.get()
        if admitted is not None and admitted.token == token:
            return admitted  # verified, its proof checked, by the gate for this request
        try:
            return await anyio.to_thread.run_sync(self._access_token, token)
        except AgentSudoError as exc:  # every refusal; the message never holds the token
            _log.info("MCP bearer token refused: %s", exc)
            return None

    def _access_token(self, token: str) -> AgentSudoAccessToken:
        access = self.verified(token)
        if access.agent.claims is not None and access.agent.claims.jkt is not None:
            raise TokenBindingError(
                "the token is bound to a key (cnf.jkt): present it with the DPoP scheme "
                "and a proof, not as a Bearer token",
                expected="DPoP",
                found="Bearer",
            )
        return access

    def verified(self, token: str) -> AgentSudoAccessToken:
        """The SDK's access token for ``token``, verified; its binding to a key is not checked.

        :raises InvalidTokenError: the token is refused.
        :raises ConfigError: the verifier cannot decide now.
        """
        agent = Agent.from_token(token, verifier=self.verifier)
        claims = agent.claims
        if claims is None:  # never: a token's agent always has its claims
            raise MalformedTokenError("token refused: no verified claims")
        granted = list(claims.scopes.scopes)
        # The SDK checks required_scopes by string equality; add the ones a wildcard covers.
        granted += [s for s in self.required_scopes if s not in granted and agent.has_scope(s)]
        access = AgentSudoAccessToken(
            token=token,
            client_id=claims.agent,  # the acting agent: for a delegated token, its act.sub
            subject=claims.subject,
            scopes=granted,
            expires_at=claims.expires_at,
            resource=self.verifier.audience,
            claims=dict(claims.claims),
        )
        access._agent = agent
        return access

    def auth_settings(
        self, *, issuer_url: str | None = None, resource_server_url: str | None = None
    ) -> AuthSettings:
        """``AuthSettings`` for an MCP server that accepts these tokens.

        The audience is checked by our ``Verifier``, so the SDK's own resource
        check is off (``validate_token_resource=False``).

        :param issuer_url: the URL of the service that mints the tokens, published in
            the protected-resource metadata; needed only with ``resource_server_url``.
        :param resource_server_url: this server's URL; when given, the SDK serves RFC 9728
            metadata at ``/.well-known/oauth-protected-resource``.
        :raises ConfigError: ``resource_server_url`` without ``issuer_url``.
        """
        if resource_server_url is not None and issuer_url is None:
            raise ConfigError(
                "auth_settings: resource_server_url is published with the issuer's URL; "
                "pass issuer_url too",
                expected="issuer_url",
                found=None,
            )
        return AuthSettings(
            issuer_url=issuer_url or _UNPUBLISHED_ISSUER,  # type: ignore[arg-type]
            resource_server_url=resource_server_url,  # type: ignore[arg-type]
            required_scopes=list(self.required_scopes) or None,
            validate_token_resource=False,
        )


def caller_agent() -> Agent | None:
    """The agent whose verified token authenticated the current MCP request, else ``None``."""
    access = get_access_token()
    return access.agent if isinstance(access, AgentSudoAccessToken) else None


def _caller_session(server: MCPServer[Any], tool: str, scope: str) -> AbstractContextManager[Any]:
    """A session of the caller's verified token; nothing to open on a server without auth.

    Without auth only a session the server opened explicitly acts: the ambient
    ``AGENTSUDO_TOKEN`` is off in a process that serves MCP calls.
    """
    disable_ambient_agent()
    access = get_access_token()
    if isinstance(access, AgentSudoAccessToken):
        return access.agent.start_session()
    if access is None and server.settings.auth is None:
        return nullcontext()  # no caller identity: an explicit session of the server, or nobody
    _log.warning("tool %r refused: the request was not authenticated by an agentsudo token", tool)
    raise ToolError(
        f"permission denied: requires scope {scope!r} "
        "(the call was not authenticated by an agentsudo token)"
    )


def _denied(scope: str, exc: PermissionDeniedError) -> ToolError:
    """The client's view of a refusal: the scope and why, never what the caller holds.

    The SDK puts ``Error executing tool <name>:`` before it. Over a limit of the
    token, the refusal's one line: the limit and the value.
    """
    if isinstance(exc, LimitExceededError):
        return ToolError(f"permission denied: {exc}")
    reason = _REASONS.get(str(exc.found), "denied")
    return ToolError(f"permission denied: requires scope {scope!r} ({reason})")


def guarded_tool(
    server: MCPServer[Any],
    scope: str,
    *,
    on_deny: OnDeny = "raise",
    name: str | None = None,
    title: str | None = None,
    description: str | None = None,
    meta: dict[str, Any] | None = None,
    **tool_options: Any,
) -> Callable[[F], F]:
    """Register a tool on ``server`` that needs ``scope``, checked against the caller's token.

    The function is wrapped in ``@sudo(scope, on_deny=...)``; each MCP call runs
    it in a session of the caller's verified token. A refusal is a ``ToolError``
    (the client sees ``isError: true``) naming the tool and the scope, never the
    caller's grants. The tool's ``_meta`` publishes the scope under
    ``SCOPE_META_KEY``. Other keyword arguments go to ``server.add_tool``.

    Returns the ``@sudo``-guarded function, so calling it directly in-process is
    guarded as well. Registering one turns this process's ambient agent off
    (``disable_ambient_agent``): it serves MCP calls.

    :raises InvalidScopeError: ``scope`` is not a concrete scope.
    :raises ConfigError: ``fn`` is a generator, which cannot be an MCP tool.
    """
    validate_required_scope(scope)
    disable_ambient_agent()

    def register(fn: F) -> F:
        if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
            raise ConfigError(
                f"guarded_tool: an MCP tool returns a value; {fn.__name__} is a generator",
                expected="a function",
                found="generator",
            )
        guarded = sudo(scope, on_deny=on_deny)(fn)
        tool = name or fn.__name__

        if inspect.iscoroutinefunction(fn):

            @functools.wraps(guarded)
            async def call_async(*args: Any, **kwargs: Any) -> Any:
                with _caller_session(server, tool, scope):
                    try:
                        return await guarded(*args, **kwargs)
                    except PermissionDeniedError as exc:
                        raise _denied(scope, exc) from exc

            entry: Callable[..., Any] = call_async
        else:

            @functools.wraps(guarded)
            def call(*args: Any, **kwargs: Any) -> Any:  # the SDK runs it in a worker thread
                with _caller_session(server, tool, scope):
                    try:
                        return guarded(*args, **kwargs)
                    except PermissionDeniedError as exc:
                        raise _denied(scope, exc) from exc

            entry = call
        entry.__agentsudo_mcp_caller__ = True  # type: ignore[attr-defined]
        server.add_tool(
            entry,
            name=tool,
            title=title,
            description=description,
            meta={**(meta or {}), SCOPE_META_KEY: scope},
            **tool_options,
        )
        return guarded  # type: ignore[return-value]

    return register


def mcp_scope_map(server: MCPServer[Any]) -> list[dict[str, Any]]:
    """Every tool of ``server`` with the scope it requires, in registration order.

    Each entry is ``{"name", "scope", "caller_token"}``: ``scope`` is ``None`` for
    an unguarded tool; ``caller_token`` is True when the tool checks the caller's
    token (``guarded_tool``), False for a ``@sudo`` function registered with plain
    ``server.tool()``, which checks only a session the server opened itself.

    :raises ConfigError: ``server`` is not an ``MCPServer`` this module understands.
    """
    manager = getattr(server, "_tool_manager", None)  # the SDK has no public sync listing
    if manager is None or not hasattr(manager, "list_tools"):
        raise ConfigError(
            f"mcp_scope_map: expected an mcp MCPServer, found {type(server).__name__}",
            expected="MCPServer",
            found=type(server).__name__,
        )
    return [
        {
            "name": tool.name,
            "scope": getattr(tool.fn, "__agentsudo_scope__", None),
            "caller_token": getattr(tool.fn, "__agentsudo_mcp_caller__", False),
        }
        for tool in manager.list_tools()
    ]
