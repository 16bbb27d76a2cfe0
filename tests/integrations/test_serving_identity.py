"""A service never lends its own identity to a request (issue 8, item 4).

The ambient ``AGENTSUDO_TOKEN`` is the identity of an agent process. In a
process that serves requests (FastAPI with the middleware or ``require_scope``,
an MCP server with ``guarded_tool``), no code handling a request acts as it, in
any thread or task. The services here are real processes (uvicorn on
127.0.0.1) started with their own ``AGENTSUDO_TOKEN`` in the default
configuration: the key directory ``./keys``, no store URL, no verifier given.
"""

# No ``from __future__ import annotations``: FastAPI must see the route annotations.
import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import anyio
import httpx
import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient

from agentsudo_tokens import (
    Agent,
    ConfigError,
    Issuer,
    JwksFile,
    KeyDirectory,
    PermissionDeniedError,
    Verifier,
    current_agent,
    issue_once,
    open_store,
    revoke_token,
    sudo,
)
from agentsudo_tokens.guard.agent import disable_ambient_agent
from agentsudo_tokens.integrations.fastapi import AgentSudoMiddleware, require_scope

TIMEOUT = 30  # seconds, for every wait on a server process


@pytest.fixture
def workdir(key_dir: KeyDirectory) -> Path:
    """The directory holding the default key directory, ``./keys`` (``agentsudo keys init``)."""
    assert key_dir.path.name == "keys"
    return key_dir.path.parent


def _environment(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTSUDO_")}
    env.update(values)
    return env


class _Server:
    """A script that binds 127.0.0.1:0, prints the port, and serves ``app`` with uvicorn."""

    SERVE = """
    import socket, sys, uvicorn
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    print(sock.getsockname()[1], flush=True)
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])
    """

    def __init__(self, workdir: Path, source: str, env: dict[str, str]) -> None:
        script = workdir / "service.py"
        script.write_text(textwrap.dedent(source) + textwrap.dedent(self.SERVE))
        self.process = subprocess.Popen(
            [sys.executable, str(script)],
            cwd=workdir,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        port = self.process.stdout.readline().strip()  # EOF if the script dies first
        if not port.isdigit():
            self.stop()
            raise AssertionError(f"the service did not start: {self.stderr}")
        self.url = f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        """End the server; keep what it wrote on stderr. Closes the pipes."""
        if self.process.poll() is None:
            self.process.terminate()
        try:
            self.stderr = self.process.communicate(timeout=TIMEOUT)[1]
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.stderr = self.process.communicate(timeout=TIMEOUT)[1]


# --- FastAPI: plain threads started by a request handler ---------------------

SERVICE = """
import asyncio, threading
from concurrent.futures import ThreadPoolExecutor
from fastapi import FastAPI
from agentsudo_tokens import PermissionDeniedError, current_agent, sudo
from agentsudo_tokens.integrations.fastapi import AgentSudoMiddleware
from agentsudo_tokens.guard.propagation import copy_session

@sudo(scope="write:refunds")
def pay_out():
    return "paid by " + current_agent().name

def attempt():
    try:
        return pay_out()
    except PermissionDeniedError as exc:
        return "denied: " + str(exc.found)

def in_a_thread():
    box = []
    thread = threading.Thread(target=lambda: box.append(attempt()))
    thread.start()
    thread.join()
    return box[0]

app = FastAPI()
app.add_middleware(AgentSudoMiddleware)

@app.post("/executor")
async def executor():
    return await asyncio.get_running_loop().run_in_executor(None, attempt)

@app.post("/thread")
async def thread():
    return in_a_thread()

@app.post("/pool")
async def pool():
    with ThreadPoolExecutor(max_workers=1) as workers:
        return workers.submit(attempt).result()

@app.post("/sync-thread")
def sync_thread():
    return in_a_thread()

@app.post("/copied")
async def copied():
    return await asyncio.get_running_loop().run_in_executor(None, copy_session(attempt))
"""
THREAD_ROUTES = ["/executor", "/thread", "/pool", "/sync-thread"]


@pytest.fixture
def service(workdir: Path, issuer: Issuer) -> Iterator[_Server]:
    own = issuer.issue("BillingService", ["write:refunds"]).token
    server = _Server(workdir, SERVICE, _environment(AGENTSUDO_TOKEN=own))
    yield server
    server.stop()


@pytest.mark.parametrize("route", THREAD_ROUTES)
def test_a_request_without_a_token_never_runs_as_the_service_in_a_thread(
    service: _Server, route: str
) -> None:
    with httpx.Client(base_url=service.url, timeout=TIMEOUT) as client:
        answer = client.post(route)
    assert answer.status_code == 200, answer.text
    assert answer.json() == "denied: no session"


@pytest.mark.parametrize("route", THREAD_ROUTES)
def test_a_weak_caller_never_runs_as_the_service_in_a_thread(
    service: _Server, issuer: Issuer, route: str
) -> None:
    weak = issuer.issue("Intern", ["read:orders"]).token
    with httpx.Client(base_url=service.url, timeout=TIMEOUT) as client:
        answer = client.post(route, headers={"Authorization": f"Bearer {weak}"})
    assert answer.status_code == 200, answer.text
    assert answer.json() == "denied: no session"  # neither the service nor the caller


def test_the_callers_session_is_carried_into_a_thread_only_on_purpose(
    service: _Server, issuer: Issuer
) -> None:
    strong = {"Authorization": f"Bearer {issuer.issue('RefundBot', ['write:refunds']).token}"}
    weak = {"Authorization": f"Bearer {issuer.issue('Intern', ['read:orders']).token}"}
    with httpx.Client(base_url=service.url, timeout=TIMEOUT) as client:
        assert client.post("/copied", headers=strong).json() == "paid by RefundBot"
        assert client.post("/copied", headers=weak).json() == "denied: not granted"
        assert client.post("/copied").json() == "denied: no session"
        assert client.post("/executor", headers=strong).json() == "denied: no session"


# --- MCP: a server with no auth configured -----------------------------------

MCP_SERVER = """
from mcp.server.mcpserver import MCPServer
from agentsudo_tokens import current_agent, sudo
from agentsudo_tokens.integrations.mcp import guarded_tool

server = MCPServer("orders", log_level="WARNING")

@guarded_tool(server, scope="delete:customer")
def delete_customer(customer_id: str) -> str:
    return f"deleted {customer_id} as {current_agent().name}"

@sudo(scope="delete:customer")
def purge(customer_id: str) -> str:
    return f"purged {customer_id} as {current_agent().name}"

server.add_tool(purge)
app = server.streamable_http_app()
"""


def _mcp_call(url: str, tool: str, arguments: dict[str, Any]) -> Any:
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    async def go() -> Any:
        http = httpx2.AsyncClient()  # no Authorization header: the client sends no token
        client = Client(streamable_http_client(f"{url}/mcp", http_client=http))
        with anyio.fail_after(TIMEOUT):
            async with http, client:
                return await client.call_tool(tool, arguments)

    return anyio.run(go)


def _text(result: Any) -> str:
    return "\n".join(getattr(item, "text", "") for item in result.content)


def test_an_mcp_server_without_auth_never_lends_its_identity(workdir: Path, issuer: Issuer) -> None:
    own = issuer.issue("OrdersServer", ["delete:customer"]).token
    server = _Server(workdir, MCP_SERVER, _environment(AGENTSUDO_TOKEN=own))
    try:
        deleted = _mcp_call(server.url, "delete_customer", {"customer_id": "cust_456"})
        purged = _mcp_call(server.url, "purge", {"customer_id": "cust_456"})
    finally:
        server.stop()
    assert deleted.is_error and "OrdersServer" not in _text(deleted), _text(deleted)
    assert "permission denied" in _text(deleted) and "'delete:customer'" in _text(deleted)
    assert purged.is_error and "OrdersServer" not in _text(purged), _text(purged)


# --- a dependency given its own verifier uses it -----------------------------


def _admin_app(strict: Verifier) -> FastAPI:
    app = FastAPI()
    app.add_middleware(AgentSudoMiddleware)  # the default verifier: ./keys, audience agentsudo

    @app.post("/wipe")
    def wipe(agent: Annotated[Agent, Depends(require_scope("admin:wipe", verifier=strict))]) -> str:
        return f"wiped by {agent.name}"

    return app


@pytest.fixture
def strict(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> Verifier:
    """The admin route's verifier: its own audience and its own state store."""
    monkeypatch.chdir(workdir)
    store = open_store(f"sqlite:///{workdir / 'admin-state.db'}")
    return Verifier(JwksFile(workdir / "keys" / "jwks.json"), audience="admin", store=store)


BOTH = ["agentsudo", "admin"]  # passes the middleware (agentsudo) and the admin route


@pytest.mark.parametrize("case", ["wrong audience", "revoked", "one-time used thrice"])
def test_require_scope_with_its_own_verifier_refuses_what_it_refuses(
    strict: Verifier, issuer: Issuer, case: str
) -> None:
    client = TestClient(_admin_app(strict))

    def wipe(token: str) -> int:
        return client.post("/wipe", headers={"Authorization": f"Bearer {token}"}).status_code

    assert strict.store is not None
    assert wipe(issuer.issue("Admin", ["admin:wipe"], audience=BOTH).token) == 200
    if case == "wrong audience":
        assert wipe(issuer.issue("Admin", ["admin:wipe"]).token) == 401  # the middleware's only
    elif case == "revoked":
        revoked = issuer.issue("Admin", ["admin:wipe"], audience=BOTH).token
        revoke_token(strict.store, revoked, reason="leaked")
        assert wipe(revoked) == 401
    else:
        once = issue_once(issuer, strict.store, "Admin", ["admin:wipe"], audience=BOTH).token
        assert [wipe(once) for _ in range(3)].count(200) <= 1


def test_a_dependency_sharing_the_middlewares_verifier_verifies_once(
    key_dir: KeyDirectory, issuer: Issuer, tmp_path: Path
) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'state.db'}")
    shared = Verifier(JwksFile(key_dir.jwks_path), store=store)
    app = FastAPI()
    app.add_middleware(AgentSudoMiddleware, verifier=shared)

    @app.post("/deploy")
    def deploy(agent: Annotated[Agent, Depends(require_scope("deploy:prod", verifier=shared))]):
        return agent.name

    client = TestClient(app)
    once = issue_once(issuer, store, "DeployBot", ["deploy:prod"]).token
    statuses = [
        client.post("/deploy", headers={"Authorization": f"Bearer {once}"}).status_code
        for _ in range(2)
    ]
    assert statuses == [200, 401]  # used once: by the middleware, then refused


# --- 503: a verifier that cannot decide says why, once -----------------------


@pytest.mark.parametrize("middleware", [False, True], ids=["dependency", "middleware"])
@pytest.mark.parametrize("breakage", ["garbage state file", "bad store setting"])
def test_a_503_logs_one_warning_saying_why(
    workdir: Path,
    issuer: Issuer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    middleware: bool,
    breakage: str,
) -> None:
    monkeypatch.chdir(workdir)
    if breakage == "garbage state file":
        (workdir / "keys" / "agentsudo-state.db").write_bytes(b"not a database " * 64)
    else:
        monkeypatch.setenv("AGENTSUDO_STORE", "postgres://db.internal/state")
    app = FastAPI()
    if middleware:
        app.add_middleware(AgentSudoMiddleware)

    @app.get("/orders")
    def orders(agent: Annotated[Agent, Depends(require_scope("read:orders"))]) -> str:
        return agent.name

    token = issuer.issue("Bot", ["read:orders"]).token
    with caplog.at_level(logging.INFO, logger="agentsudo"):
        answer = TestClient(app).get("/orders", headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 503, answer.text
    assert answer.json()["detail"].startswith("cannot check the token now")
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert warnings[0].name.split(".")[0] == "agentsudo"
    assert "/orders" in warnings[0].getMessage() and "store" in warnings[0].getMessage().lower()
    assert all(token not in r.getMessage() for r in caplog.records)


# --- the switch itself, in one process ----------------------------------------


def test_a_serving_process_acts_as_itself_only_in_an_explicit_session(
    key_dir: KeyDirectory, issuer: Issuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTSUDO_TOKEN", issuer.issue("BillingService", ["write:x"]).token)
    monkeypatch.setenv("AGENTSUDO_JWKS", str(key_dir.jwks_path))

    @sudo(scope="write:x")
    def write() -> str:
        agent = current_agent()
        return agent.name if agent else "nobody"

    assert write() == "BillingService"  # an agent process: the ambient agent acts
    disable_ambient_agent()
    assert current_agent() is None
    with pytest.raises(PermissionDeniedError, match="serves requests"):
        write()
    with Agent.from_env().start_session():  # the service, on purpose
        assert write() == "BillingService"
    with Agent("Caller", ["write:x"]).start_session():
        assert write() == "Caller"


def test_agent_from_env_needs_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="AGENTSUDO_TOKEN is not set"):
        Agent.from_env()
