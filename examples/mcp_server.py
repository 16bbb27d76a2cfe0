"""An MCP server whose tools are guarded by the caller's agentsudo token.

Serve it (public keys from AGENTSUDO_JWKS or ./keys/jwks.json):

    agentsudo keys init
    python examples/mcp_server.py --port 8000        # http://127.0.0.1:8000/mcp

and call it with any MCP client sending ``Authorization: Bearer $TOKEN``, where

    TOKEN=$(agentsudo issue --agent SupportBot --scopes "read:orders write:refunds")

Or see the whole round trip in one process (throwaway keys, a real server on a
free loopback port, the SDK's own client):

    python examples/mcp_server.py --demo
"""

from __future__ import annotations

import argparse
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

try:  # the [mcp] extra brings these; without it, one line that says how to get it
    import anyio
    import httpx2
    import uvicorn
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client
    from mcp.server.mcpserver import MCPServer
except ImportError as missing:
    raise SystemExit(
        f"mcp_server.py needs the {str(missing.name).partition('.')[0]} package: "
        "pip install '.[mcp]' in a checkout"
    ) from None

from agentsudo_tokens import Issuer, JwksFile, KeyDirectory, Verifier, current_agent
from agentsudo_tokens.integrations.mcp import AgentSudoTokenVerifier, guarded_tool, mcp_scope_map


def build_server(verifier: Verifier | None = None) -> MCPServer[Any]:
    """The orders server: three tools, each needing its own scope."""
    tokens = AgentSudoTokenVerifier(verifier)  # None: AGENTSUDO_JWKS or the key directory
    server: MCPServer[Any] = MCPServer(
        "orders", token_verifier=tokens, auth=tokens.auth_settings(), log_level="WARNING"
    )

    @guarded_tool(server, scope="read:orders")
    def lookup_order(order_id: str) -> str:
        """Read an order."""
        return f"order {order_id}: 2 items, $50.00"

    @guarded_tool(server, scope="write:refunds")
    async def issue_refund(order_id: str, amount: int) -> str:
        """Refund part of an order, as the calling agent."""
        agent = current_agent()  # the caller's verified token is this call's session
        return f"{agent.name if agent else '?'} refunded ${amount} on {order_id}"

    @guarded_tool(server, scope="delete:customer")
    def delete_customer(customer_id: str) -> str:
        """The call nobody's support bot should be able to make."""
        return f"deleted {customer_id}"

    return server


def serve(port: int) -> None:
    server = build_server()
    for entry in mcp_scope_map(server):
        print(f"  tool {entry['name']:<16} needs {entry['scope']}")
    uvicorn.run(server.streamable_http_app(), host="127.0.0.1", port=port, log_level="warning")


async def _call_tools(url: str, token: str | None) -> None:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with anyio.fail_after(20):
        async with (
            httpx2.AsyncClient(headers=headers) as http,
            Client(streamable_http_client(url, http_client=http)) as client,
        ):
            for name, arguments in (
                ("lookup_order", {"order_id": "order_123"}),
                ("issue_refund", {"order_id": "order_123", "amount": 50}),
                ("delete_customer", {"customer_id": "cust_456"}),
            ):
                result = await client.call_tool(name, arguments)
                text = " ".join(getattr(item, "text", "") for item in result.content)
                print(f"    {'DENIED ' if result.is_error else 'allowed'}  {name}: {text}")


def demo() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        keys = KeyDirectory.init(Path(tmp) / "keys")
        server = build_server(Verifier(JwksFile(keys.jwks_path)))
        token = Issuer(keys.signing_key()).issue("SupportBot", "read:orders write:refunds").token
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/mcp"
        http = uvicorn.Server(uvicorn.Config(server.streamable_http_app(), log_level="warning"))
        thread = threading.Thread(target=http.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while not http.started and time.monotonic() < deadline:
            time.sleep(0.01)
        try:
            print("  SupportBot (read:orders write:refunds):")
            anyio.run(_call_tools, url, token)
            print("  no token:")
            try:
                anyio.run(_call_tools, url, None)
            except Exception:  # the SDK client reports the HTTP 401 as a failed connection
                print("    refused  the server answered 401 before any tool ran")
        finally:
            http.should_exit = True
            thread.join(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--demo", action="store_true", help="a self-contained round trip")
    args = parser.parse_args()
    demo() if args.demo else serve(args.port)


if __name__ == "__main__":
    main()
