"""An MCP server behind ``DPoPGate``: tokens bound to a key, with a proof on every request.

One real uvicorn server per module on 127.0.0.1; the SDK's own client signs
each request with ``dpop_request_hook`` inside the agent's session. A request
with ``X-Gate: origin`` goes through a second gate, one that knows the
service's public origin.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import anyio
import httpx
import httpx2
import pytest
import uvicorn
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.server.mcpserver import MCPServer

from agentsudo_tokens import Agent, Issuer, JwksFile, KeyDirectory, Verifier, current_agent
from agentsudo_tokens.integrations.mcp import AgentSudoTokenVerifier, guarded_tool
from agentsudo_tokens.integrations.mcp_dpop import DPoPGate, dpop_request_hook
from agentsudo_tokens.tokens.dpop import DPoPKey
from agentsudo_tokens.tokens.dpop_proof import ProofVerifier

AUDIENCE = "mcp-orders"
TIMEOUT = 10
ORIGIN = "https://orders.example"


@dataclass
class Running:
    url: str
    issuer: Issuer
    verifier: Verifier
    key: DPoPKey

    def bound(self, scopes: list[str] | None = None) -> str:
        grants = scopes or ["mcp:connect", "read:orders"]
        return self.issuer.issue("OrdersBot", grants, jkt=self.key.jkt).token


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    key_dir = KeyDirectory.init(tmp_path_factory.mktemp("mcp-dpop") / "keys")
    verifier = Verifier(JwksFile(key_dir.jwks_path), audience=AUDIENCE)
    tokens = AgentSudoTokenVerifier(verifier, required_scopes=["mcp:connect"])
    server: MCPServer[Any] = MCPServer(
        "orders-dpop", token_verifier=tokens, auth=tokens.auth_settings(), log_level="WARNING"
    )

    @guarded_tool(server, scope="read:orders")
    def whoami() -> str:
        agent = current_agent()
        return f"{agent.name} bound to {agent.claims.jkt}" if agent and agent.claims else "?"

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    inner = server.streamable_http_app()
    gate = DPoPGate(inner, tokens)
    public = DPoPGate(inner, tokens, proofs=ProofVerifier(origin=ORIGIN))

    async def app(scope: Any, receive: Any, send: Any) -> None:
        chosen = (b"x-gate", b"origin") in scope.get("headers", ())
        await (public if chosen else gate)(scope, receive, send)

    http = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=http.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + TIMEOUT
    while not http.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the MCP server did not start"
        time.sleep(0.01)
    issuer = Issuer(key_dir.signing_key(), audience=AUDIENCE)
    try:
        yield Running(f"http://127.0.0.1:{port}/mcp", issuer, verifier, DPoPKey.generate())
    finally:
        http.should_exit = True
        thread.join(TIMEOUT)
        sock.close()


def _call(running: Running, token: str, key: DPoPKey | None) -> Any:
    async def go() -> Any:
        http = httpx2.AsyncClient(event_hooks={"request": [dpop_request_hook(key)]})
        client = Client(streamable_http_client(running.url, http_client=http))
        with anyio.fail_after(TIMEOUT):
            async with http, client:
                return await client.call_tool("whoami", {})

    with Agent.from_token(token, verifier=running.verifier).start_session():
        return anyio.run(go)


def _initialize(running: Running, headers: dict[str, str]) -> httpx.Response:
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "test", "version": "0"},
        },
    }
    accept = {"Accept": "application/json, text/event-stream"}
    return httpx.post(running.url, json=body, headers={**accept, **headers}, timeout=TIMEOUT)


def test_a_bound_token_with_its_proofs_calls_a_tool(running: Running) -> None:
    result = _call(running, running.bound(), running.key)
    assert not result.is_error
    texts = [getattr(item, "text", "") for item in result.content]
    assert texts == [f"OrdersBot bound to {running.key.jkt}"]


def test_a_bound_token_as_a_bearer_token_is_refused(running: Running) -> None:
    answer = _initialize(running, {"Authorization": f"Bearer {running.bound()}"})
    assert answer.status_code == 401  # the SDK's answer: its verifier refused the token


def test_a_dpop_request_without_a_valid_proof_is_refused(running: Running) -> None:
    token = running.bound()
    missing = _initialize(running, {"Authorization": f"DPoP {token}"})
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"].startswith('DPoP error="invalid_dpop_proof"')
    thief = DPoPKey.generate().proof("POST", running.url, token=token)
    stolen = _initialize(running, {"Authorization": f"DPoP {token}", "DPoP": thief})
    assert stolen.status_code == 401
    assert stolen.headers["www-authenticate"].startswith('DPoP error="invalid_token"')
    proof = running.key.proof("POST", running.url, token=token)
    good = {"Authorization": f"DPoP {token}", "DPoP": proof}
    assert _initialize(running, good).status_code == 200
    replayed = _initialize(running, good)
    assert replayed.status_code == 401 and "used before" in replayed.headers["www-authenticate"]
    wrong_method = running.key.proof("GET", running.url, token=token)
    answer = _initialize(running, {"Authorization": f"DPoP {token}", "DPoP": wrong_method})
    assert answer.status_code == 401 and "method 'GET'" in answer.headers["www-authenticate"]


def test_a_plain_token_is_still_a_bearer_token(running: Running) -> None:
    plain = running.issuer.issue("OrdersBot", ["mcp:connect", "read:orders"]).token
    assert _initialize(running, {"Authorization": f"Bearer {plain}"}).status_code == 200
    proof = running.key.proof("POST", running.url, token=plain)
    answer = _initialize(running, {"Authorization": f"DPoP {plain}", "DPoP": proof})
    assert answer.status_code == 401 and "not bound" in answer.headers["www-authenticate"]


def test_a_gate_with_an_origin_refuses_a_proof_for_another_host(running: Running) -> None:
    token = running.bound()

    def initialize(url: str, **headers: str) -> httpx.Response:
        proof = running.key.proof("POST", url, token=token)
        return _initialize(
            running,
            {"Authorization": f"DPoP {token}", "DPoP": proof, "X-Gate": "origin", **headers},
        )

    spoofed = initialize("http://billing.example/mcp", Host="billing.example")
    assert spoofed.status_code == 401
    assert "made for URL 'http://billing.example/mcp'" in spoofed.headers["www-authenticate"]
    by_host = initialize(running.url)  # the URL the Host header names: not the service's
    assert by_host.status_code == 401 and "made for URL" in by_host.headers["www-authenticate"]
    assert initialize(f"{ORIGIN}/mcp").status_code == 200
