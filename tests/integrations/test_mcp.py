"""An MCP server (the official SDK over streamable HTTP) that takes agentsudo tokens.

One real uvicorn server per module on 127.0.0.1, called with the SDK's own
client and an ``Authorization: Bearer`` header.
"""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
import uvicorn
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.server.mcpserver import MCPServer
from mcp.shared.exceptions import MCPError

from agentsudo_tokens import (
    Agent,
    InvalidScopeError,
    Issuer,
    JwksFile,
    KeyDirectory,
    PermissionDeniedError,
    Verifier,
    current_agent,
    sudo,
)
from agentsudo_tokens.integrations.mcp import (
    SCOPE_META_KEY,
    AgentSudoAccessToken,
    AgentSudoTokenVerifier,
    caller_agent,
    guarded_tool,
    mcp_scope_map,
)

AUDIENCE = "mcp-orders"
SECRET_GRANT = "read:secret-payroll"  # granted, and must never show in a denial
GRANTS = ["mcp:*", "read:orders", "write:refunds", SECRET_GRANT]
TIMEOUT = 10  # seconds, for every wait on the server


def _build_server(verifier: Verifier) -> MCPServer[Any]:
    tokens = AgentSudoTokenVerifier(verifier, required_scopes=["mcp:connect"])
    server: MCPServer[Any] = MCPServer(
        "orders-test", token_verifier=tokens, auth=tokens.auth_settings(), log_level="WARNING"
    )

    @guarded_tool(server, scope="read:orders")
    def list_orders(customer: str) -> list[str]:
        """List a customer's orders."""
        return [f"{customer}-1", f"{customer}-2"]

    @guarded_tool(server, scope="write:refunds")
    async def refund(order_id: str, amount: float) -> dict[str, Any]:
        agent = current_agent()
        assert agent is not None
        return {"order": order_id, "amount": amount, "by": agent.name, "jti": agent.jti}

    @guarded_tool(server, scope="write:payroll")
    def run_payroll() -> str:
        return "payroll ran"

    @guarded_tool(server, scope="read:orders")
    async def slow_whoami() -> str:
        await anyio.sleep(0.05)  # overlap with another caller's call
        agent = current_agent()
        return agent.name if agent is not None else "nobody"

    @server.tool()
    def whoami() -> str:
        agent = caller_agent()
        return agent.name if agent is not None else "nobody"

    @sudo(scope="read:orders")
    def legacy_orders() -> str:
        return "checked against the server's own agent"

    server.add_tool(legacy_orders)
    return server


@dataclass
class Running:
    url: str
    server: MCPServer[Any]
    issuer: Issuer
    statuses: list[int] = field(default_factory=list)
    challenges: list[str] = field(default_factory=list)

    def token(self, scopes: list[str] | str = GRANTS, **options: Any) -> str:
        return self.issuer.issue("OrdersBot", scopes, **options).token


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    key_dir = KeyDirectory.init(tmp_path_factory.mktemp("mcp") / "keys")
    server = _build_server(Verifier(JwksFile(key_dir.jwks_path), audience=AUDIENCE))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        server.streamable_http_app(),
        log_level="warning",
        lifespan="on",
        timeout_graceful_shutdown=2,
    )
    http = uvicorn.Server(config)
    thread = threading.Thread(target=http.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + TIMEOUT
    while not http.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the MCP server did not start"
        time.sleep(0.01)
    try:
        yield Running(
            f"http://127.0.0.1:{port}/mcp", server, Issuer(key_dir.signing_key(), audience=AUDIENCE)
        )
    finally:
        http.should_exit = True
        thread.join(TIMEOUT)
        sock.close()
        assert not thread.is_alive(), "the MCP server did not stop"


def _session(running: Running, token: str | None) -> tuple[httpx2.AsyncClient, Client]:
    """The SDK's client over streamable HTTP, recording each HTTP status it receives."""

    async def record(response: httpx2.Response) -> None:
        running.statuses.append(response.status_code)
        running.challenges.append(response.headers.get("www-authenticate", ""))

    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    http = httpx2.AsyncClient(headers=headers, event_hooks={"response": [record]})
    return http, Client(streamable_http_client(running.url, http_client=http))


def _call(running: Running, token: str | None, tool: str, arguments: dict[str, Any]) -> Any:
    async def go() -> Any:
        http, client = _session(running, token)
        with anyio.fail_after(TIMEOUT):
            async with http, client:
                return await client.call_tool(tool, arguments)

    return anyio.run(go)


def _refused(running: Running, token: str | None) -> BaseException:
    """Connect with ``token``; return what the SDK raised (it must raise)."""

    async def go() -> None:
        http, client = _session(running, token)
        with anyio.fail_after(TIMEOUT):
            async with http, client:
                await client.list_tools()

    running.statuses.clear()
    running.challenges.clear()
    with pytest.raises(BaseException) as caught:  # the SDK wraps it in exception groups
        anyio.run(go)
    return caught.value


def _leaves(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in _leaves(inner)]
    return [error]


def _assert_http_refused(running: Running, error: BaseException, status: int) -> None:
    assert any(isinstance(leaf, MCPError) for leaf in _leaves(error)), error
    assert running.statuses and set(running.statuses) == {status}
    assert all(c.startswith("Bearer ") for c in running.challenges)


def _text(result: Any) -> str:
    return "\n".join(getattr(item, "text", "") for item in result.content)


def test_allowed_tool_runs(running: Running) -> None:
    result = _call(running, running.token(), "list_orders", {"customer": "c42"})
    assert not result.is_error
    assert result.structured_content == {"result": ["c42-1", "c42-2"]}


def test_tool_runs_in_a_session_of_the_callers_token(running: Running) -> None:
    minted = running.issuer.issue("RefundBot", ["mcp:connect", "write:refunds"])
    result = _call(running, minted.token, "refund", {"order_id": "o1", "amount": 12.5})
    assert not result.is_error, _text(result)
    assert result.structured_content == {
        "order": "o1",
        "amount": 12.5,
        "by": "RefundBot",
        "jti": minted.claims["jti"],
    }
    whoami = _call(running, minted.token, "whoami", {})
    assert _text(whoami) == "RefundBot"


def test_concurrent_callers_each_get_their_own_session(running: Running) -> None:
    callers = {
        "Alice": running.issuer.issue("Alice", ["mcp:connect", "read:orders"]).token,
        "Bob": running.issuer.issue("Bob", ["mcp:connect", "read:orders"]).token,
        "Mallory": running.issuer.issue("Mallory", ["mcp:connect"]).token,
    }
    results: dict[str, Any] = {}

    async def one(name: str, token: str) -> None:
        http, client = _session(running, token)
        async with http, client:
            results[name] = [await client.call_tool("slow_whoami", {}) for _ in range(3)]

    async def go() -> None:
        with anyio.fail_after(TIMEOUT):
            async with anyio.create_task_group() as group:
                for name, token in callers.items():
                    group.start_soon(one, name, token)

    anyio.run(go)
    for name in ("Alice", "Bob"):
        assert [_text(r) for r in results[name]] == [name] * 3
    assert all(r.is_error and "'read:orders'" in _text(r) for r in results["Mallory"])


def test_denied_tool_names_the_scope_and_nothing_the_caller_holds(running: Running) -> None:
    result = _call(running, running.token(), "run_payroll", {})
    assert result.is_error
    text = _text(result)
    assert "'write:payroll'" in text and "permission denied" in text
    dumped = result.model_dump_json()
    for granted in GRANTS:
        assert granted not in dumped
    assert "secret" not in dumped


def test_no_token_is_an_http_401(running: Running) -> None:
    error = _refused(running, None)
    _assert_http_refused(running, error, 401)
    assert 'error="invalid_token"' in running.challenges[0]


def test_tampered_token_is_an_http_401(running: Running) -> None:
    head, body, signature = running.token(["mcp:connect"]).split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    widened = json.dumps({**claims, "scope": "**"}, separators=(",", ":")).encode()
    forged_body = base64.urlsafe_b64encode(widened).decode().rstrip("=")
    for forged in (f"{head}.{forged_body}.{signature}", f"{head}.{body}.{signature[::-1]}"):
        _assert_http_refused(running, _refused(running, forged), 401)


def test_expired_and_foreign_tokens_are_http_401(running: Running) -> None:
    expired = running.issuer.issue("OrdersBot", GRANTS, now=time.time() - 3600).token
    _assert_http_refused(running, _refused(running, expired), 401)
    other_audience = running.issuer.issue("OrdersBot", GRANTS, audience="billing").token
    _assert_http_refused(running, _refused(running, other_audience), 401)


def test_server_wide_required_scope_is_a_403(running: Running) -> None:
    _assert_http_refused(running, _refused(running, running.token(["read:orders"])), 403)
    exact = running.token(["mcp:connect", "read:orders"])  # the wildcard grant passes above
    assert not _call(running, exact, "list_orders", {"customer": "c1"}).is_error


def test_scopes_are_published_and_mapped(running: Running) -> None:
    async def go() -> Any:
        http, client = _session(running, running.token())
        with anyio.fail_after(TIMEOUT):
            async with http, client:
                return await client.list_tools()

    tools = {tool.name: tool for tool in anyio.run(go).tools}
    assert tools["list_orders"].meta == {SCOPE_META_KEY: "read:orders"}
    assert tools["list_orders"].description == "List a customer's orders."
    assert "customer" in tools["list_orders"].input_schema["properties"]
    assert not tools["whoami"].meta
    assert mcp_scope_map(running.server) == [
        {"name": "list_orders", "scope": "read:orders", "caller_token": True},
        {"name": "refund", "scope": "write:refunds", "caller_token": True},
        {"name": "run_payroll", "scope": "write:payroll", "caller_token": True},
        {"name": "slow_whoami", "scope": "read:orders", "caller_token": True},
        {"name": "whoami", "scope": None, "caller_token": False},
        {"name": "legacy_orders", "scope": "read:orders", "caller_token": False},
    ]


def test_verify_token_returns_an_access_token(key_dir: KeyDirectory, issuer: Issuer) -> None:
    tokens = AgentSudoTokenVerifier(Verifier(JwksFile(key_dir.jwks_path)))
    minted = issuer.issue("OrdersBot", ["read:*", SECRET_GRANT])
    access = anyio.run(tokens.verify_token, minted.token)
    assert isinstance(access, AgentSudoAccessToken)
    assert (access.client_id, access.subject) == ("OrdersBot", "OrdersBot")
    assert access.scopes == ["read:*", SECRET_GRANT]
    assert access.expires_at == minted.claims["exp"]
    assert access.claims is not None and access.claims["jti"] == minted.claims["jti"]
    assert access.agent.signed and access.agent.has_scope("read:orders")
    assert "_agent" not in access.model_dump() and minted.token not in repr(access.agent)
    assert anyio.run(tokens.verify_token, minted.token + "x") is None
    assert anyio.run(tokens.verify_token, "not a token") is None


def test_scopes_are_checked_when_applied(verifier: Verifier) -> None:
    server: MCPServer[Any] = MCPServer("t")
    with pytest.raises(InvalidScopeError):
        guarded_tool(server, scope="read:*")
    with pytest.raises(InvalidScopeError):
        AgentSudoTokenVerifier(verifier, required_scopes=["**"])


def test_guarded_tool_returns_the_guarded_function() -> None:
    server: MCPServer[Any] = MCPServer("t")

    @guarded_tool(server, scope="read:orders")
    def list_orders() -> str:
        return "ok"

    with pytest.raises(PermissionDeniedError):
        list_orders()
    with Agent("Dev", ["read:orders"]).start_session():
        assert list_orders() == "ok"


def test_without_auth_only_an_explicit_session_acts_never_agentsudo_token(
    monkeypatch: pytest.MonkeyPatch, key_dir: KeyDirectory, issuer: Issuer
) -> None:
    """Without auth a call carries no token: the server's own AGENTSUDO_TOKEN never acts for it.

    A session the server opened itself (a stdio server started by one agent) does.
    """
    monkeypatch.setenv("AGENTSUDO_TOKEN", issuer.issue("OrdersServer", "read:orders").token)
    monkeypatch.setenv("AGENTSUDO_JWKS", str(key_dir.jwks_path))
    assert current_agent() is not None  # an agent process, until it serves MCP calls
    server: MCPServer[Any] = MCPServer("stdio-like")

    @guarded_tool(server, scope="read:orders")
    async def list_orders() -> str:
        return "ok"

    async def call() -> Any:
        async with Client(server) as client:  # the SDK's in-process transport
            return await client.call_tool("list_orders", {})

    denied = anyio.run(call)
    assert denied.is_error and "'read:orders'" in _text(denied)
    assert "no agent token came with the call" in _text(denied)
    assert current_agent() is None
    with Agent("Dev", ["read:orders"]).start_session():
        assert _text(anyio.run(call)) == "ok"
    with Agent.from_env().start_session():  # the server acting as itself, on purpose
        assert _text(anyio.run(call)) == "ok"


def test_the_scope_map_covers_mcp_tools(tmp_path: Path) -> None:
    import sys
    import textwrap

    from agentsudo_tokens.integrations.scopemap import scope_map

    (tmp_path / "mcp_tools_mod.py").write_text(
        textwrap.dedent(
            """
            from mcp.server.mcpserver import MCPServer
            from agentsudo_tokens.integrations.mcp import guarded_tool

            server = MCPServer("orders", log_level="WARNING")

            @guarded_tool(server, scope="read:orders")
            def lookup_order(order_id: str) -> str:
                return order_id

            @server.tool()
            def ping() -> str:
                return "pong"
            """
        )
    )
    sys.path.insert(0, str(tmp_path))
    try:
        mapped = scope_map("mcp_tools_mod").by_scope()
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("mcp_tools_mod", None)
    assert "mcp:lookup_order" in mapped["read:orders"]
    assert not any("ping" in name for names in mapped.values() for name in names)


def test_a_delegated_token_is_the_acting_agents_client(
    key_dir: KeyDirectory, issuer: Issuer
) -> None:
    """``client_id`` is who acts (the outermost ``act``), ``subject`` on whose behalf (RFC 8693)."""
    from agentsudo_tokens.tokens.delegation import Delegation

    verifier = Verifier(JwksFile(key_dir.jwks_path))
    parent = verifier.verify(issuer.issue("OrdersBot", ["read:*"]).token)
    child = issuer.issue(
        "OrdersBot", ["read:orders"], delegation=Delegation(("Summarizer",), (parent.jti,))
    )
    access = anyio.run(AgentSudoTokenVerifier(verifier).verify_token, child.token)
    assert access is not None
    assert (access.client_id, access.subject) == ("Summarizer", "OrdersBot")


def test_a_tool_call_over_a_limit_of_the_token_names_the_limit_and_the_value(
    running: Running,
) -> None:
    from agentsudo_tokens.tokens.limits import Limits

    limits = Limits.parse(["write:refunds amount<=100"])
    token = running.issuer.issue(
        "RefundBot", ["mcp:connect", "write:refunds", SECRET_GRANT], limits=limits
    )
    allowed = _call(running, token.token, "refund", {"order_id": "o1", "amount": 99.5})
    assert not allowed.is_error, _text(allowed)
    assert allowed.structured_content["amount"] == 99.5
    refused = _call(running, token.token, "refund", {"order_id": "o1", "amount": 5000})
    assert refused.is_error
    text = _text(refused)
    assert (
        "permission denied: amount 5000.0 exceeds the token's limit 100 for write:refunds" in text
    )
    assert SECRET_GRANT not in refused.model_dump_json()
    missing = _call(running, token.token, "refund", {"order_id": "o1"})
    assert missing.is_error  # the SDK refuses a call without a required argument before us
