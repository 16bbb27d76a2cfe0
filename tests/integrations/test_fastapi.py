"""FastAPI / Starlette: ``require_scope`` and ``AgentSudoMiddleware`` (DESIGN.md section 9).

Requests go through Starlette's ``TestClient`` or httpx's ``ASGITransport``
into a real FastAPI app; tokens are minted by the issuer fixture and verified
with the key directory's real ``jwks.json``.
"""

# No ``from __future__ import annotations``: FastAPI must see the closures' annotations.
import asyncio
import base64
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Annotated

import httpx
import pytest
from fastapi import Depends, FastAPI, WebSocket
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from agentsudo_tokens import (
    Agent,
    InvalidScopeError,
    Issuer,
    KeyDirectory,
    PublicKey,
    Verifier,
    current_agent,
    sudo,
)
from agentsudo_tokens.errors import StoreUnavailableError
from agentsudo_tokens.integrations.fastapi import AgentSudoMiddleware, require_scope
from agentsudo_tokens.state import Store, open_store
from agentsudo_tokens.tokens.revocation import revoke_token

GRANTED = ["read:orders", "write:refunds"]
HOST = "127.0.0.1"


@sudo(scope="write:refunds")
def pay_out(order_id: str) -> str:
    agent = current_agent()
    assert agent is not None
    return f"{order_id} paid by {agent.name}"


@sudo(scope="delete:customers")
def erase(customer_id: str) -> str:
    return f"erased {customer_id}"


def make_app(verifier: Verifier | None, *, middleware: bool) -> FastAPI:
    """One app with public, scoped, sync and async routes."""
    refunds = require_scope("write:refunds", verifier=verifier)
    deletes = require_scope("delete:customers", verifier=verifier)
    app = FastAPI()
    if middleware:
        app.add_middleware(AgentSudoMiddleware, verifier=verifier)

    @app.get("/public")
    def public() -> dict[str, object]:
        agent = current_agent()
        return {"agent": agent.name if agent else None}

    @app.post("/sync/refunds/{order_id}")
    def sync_refund(order_id: str, agent: Annotated[Agent, Depends(refunds)]) -> dict[str, str]:
        return {"agent": agent.name, "thread": threading.current_thread().name}

    @app.post("/async/refunds/{order_id}")
    async def async_refund(
        order_id: str, agent: Annotated[Agent, Depends(refunds)]
    ) -> dict[str, str]:
        await asyncio.sleep(0)
        return {"agent": agent.name}

    @app.delete("/customers/{customer_id}")
    def delete_customer(customer_id: str, agent: Annotated[Agent, Depends(deletes)]) -> str:
        return erase(customer_id)

    @app.post("/sudo/sync/{order_id}")
    def sudo_sync(order_id: str) -> dict[str, str]:
        return {"result": pay_out(order_id)}  # checked against the caller's session

    @app.post("/sudo/async/{order_id}")
    async def sudo_async(order_id: str) -> dict[str, str]:
        await asyncio.sleep(0)
        return {"result": pay_out(order_id)}

    @app.delete("/sudo/customers/{customer_id}")
    async def sudo_delete(customer_id: str) -> dict[str, str]:
        return {"result": erase(customer_id)}

    return app


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def challenge(response: httpx.Response) -> str:
    return response.headers["www-authenticate"]


@pytest.fixture
def token(issuer: Issuer) -> str:
    return issuer.issue("SupportBot", GRANTED).token


@pytest.fixture(params=[False, True], ids=["dependency", "middleware"])
def client(request: pytest.FixtureRequest, verifier: Verifier) -> TestClient:
    return TestClient(make_app(verifier, middleware=request.param))


# --- the dependency, with and without the middleware ------------------------


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_granted_scope_returns_the_verified_agent(
    client: TestClient, token: str, kind: str
) -> None:
    response = client.post(f"/{kind}/refunds/order_1", headers=bearer(token))
    assert response.status_code == 200
    assert response.json()["agent"] == "SupportBot"


def test_a_wildcard_grant_covers_the_required_scope(
    client: TestClient, issuer: Issuer, verifier: Verifier
) -> None:
    wide = issuer.issue("Ops", ["write:*"]).token
    assert client.post("/sync/refunds/o", headers=bearer(wide)).status_code == 200


def test_a_missing_token_is_401_invalid_token(client: TestClient) -> None:
    response = client.post("/sync/refunds/order_1")
    assert response.status_code == 401
    assert challenge(response).startswith('Bearer error="invalid_token"')
    assert response.json() == {"detail": "invalid token: no bearer token"}


def _tampered(token: str) -> str:
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["scope"] += " delete:customers"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{forged}.{signature}"


def _other_key(issuer: Issuer, token: str, tmp: Path) -> str:
    stranger = Issuer(KeyDirectory.init(tmp / "other-keys").signing_key())
    return stranger.issue("SupportBot", GRANTED).token


HOSTILE: dict[str, tuple[Callable[[Issuer, str, Path], str], str]] = {
    "tampered": (lambda i, t, p: _tampered(t), "the signature does not verify"),
    "expired": (
        lambda i, t, p: i.issue("SupportBot", GRANTED, ttl=60, now=time.time() - 3600).token,
        "the token has expired",
    ),
    "wrong-audience": (
        lambda i, t, p: i.issue("SupportBot", GRANTED, audience="elsewhere").token,
        "the token is not meant for this service",
    ),
    "unknown-key": (_other_key, "the token is signed by an unknown key"),
    "garbage": (lambda i, t, p: "not.a.token", "the token is malformed"),
    "empty-bearer": (lambda i, t, p: "", "no bearer token"),
}


@pytest.mark.parametrize("middleware", [False, True], ids=["dependency", "middleware"])
@pytest.mark.parametrize("case", list(HOSTILE), ids=list(HOSTILE))
def test_a_refused_token_is_401_with_a_fixed_reason(
    verifier: Verifier, issuer: Issuer, token: str, tmp_path: Path, case: str, middleware: bool
) -> None:
    forge, reason = HOSTILE[case]
    client = TestClient(make_app(verifier, middleware=middleware))
    bad = forge(issuer, token, tmp_path)
    response = client.post("/sync/refunds/o", headers={"Authorization": f"Bearer {bad}"})
    assert response.status_code == 401, response.text
    assert challenge(response) == f'Bearer error="invalid_token", error_description="{reason}"'
    assert response.json() == {"detail": f"invalid token: {reason}"}


def test_another_scheme_is_not_a_bearer_token(client: TestClient) -> None:
    response = client.post("/sync/refunds/o", headers={"Authorization": "Basic dXNlcjpwdw=="})
    assert response.status_code == 401
    assert "no bearer token" in challenge(response)


def _asgi(app: FastAPI, headers: list[tuple[bytes, bytes]]) -> tuple[int, dict[bytes, bytes]]:
    """One raw ASGI request, headers exactly as given (clients merge repeated ones)."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/sync/refunds/o",
        "raw_path": b"/sync/refunds/o",
        "root_path": "",
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    start = sent[0]
    return int(start["status"]), dict(start["headers"])  # type: ignore[call-overload]


@pytest.mark.parametrize("middleware", [False, True], ids=["dependency", "middleware"])
def test_two_authorization_headers_are_refused(
    verifier: Verifier, token: str, middleware: bool
) -> None:
    app = make_app(verifier, middleware=middleware)
    twice = [(b"authorization", f"Bearer {token}".encode())] * 2
    status, headers = _asgi(app, twice)
    assert status == 401
    assert b"more than one Authorization header" in headers[b"www-authenticate"]
    assert _asgi(app, twice[:1])[0] == 200


def test_a_missing_scope_is_403_insufficient_scope(client: TestClient, token: str) -> None:
    response = client.delete("/customers/cust_1", headers=bearer(token))
    assert response.status_code == 403
    assert challenge(response) == (
        'Bearer error="insufficient_scope", '
        'error_description="the token lacks the required scope", scope="delete:customers"'
    )
    assert response.json() == {
        "detail": "insufficient scope: this request requires 'delete:customers'"
    }
    for held in GRANTED:  # never what the caller holds
        assert held not in response.text and held not in challenge(response)


def test_require_scope_checks_the_scope_when_declared() -> None:
    with pytest.raises(InvalidScopeError):
        require_scope("write:*")
    with pytest.raises(InvalidScopeError):
        require_scope("write refunds")


def test_require_scope_is_an_http_bearer_scheme_in_openapi(verifier: Verifier) -> None:
    schema = make_app(verifier, middleware=False).openapi()
    scheme = schema["components"]["securitySchemes"]["AgentSudoBearer"]
    assert scheme["type"] == "http" and scheme["scheme"] == "bearer"
    operation = schema["paths"]["/sync/refunds/{order_id}"]["post"]
    assert operation["security"] == [{"AgentSudoBearer": []}]


def test_keys_and_audience_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, key_dir: KeyDirectory, issuer: Issuer
) -> None:
    monkeypatch.setenv("AGENTSUDO_JWKS", str(key_dir.jwks_path))
    monkeypatch.setenv("AGENTSUDO_AUDIENCE", "billing")
    client = TestClient(make_app(None, middleware=True))
    mine = issuer.issue("SupportBot", GRANTED, audience="billing").token
    other = issuer.issue("SupportBot", GRANTED).token  # audience "agentsudo"
    assert client.post("/async/refunds/o", headers=bearer(mine)).status_code == 200
    refused = client.post("/async/refunds/o", headers=bearer(other))
    assert refused.status_code == 401 and "not meant for this service" in challenge(refused)


def test_every_decision_is_an_audit_event(
    client: TestClient, token: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="agentsudo"):
        client.post("/sync/refunds/o", headers=bearer(token))
        client.delete("/customers/c", headers=bearer(token))
    events = [r.agentsudo for r in caplog.records if hasattr(r, "agentsudo")]  # type: ignore[attr-defined]
    decisions = [(e["outcome"], e["function"]) for e in events if e["outcome"] != "session_start"]
    assert ("allowed", "POST /sync/refunds/{order_id}") in decisions
    assert ("denied", "DELETE /customers/{customer_id}") in decisions
    assert all(token not in r.getMessage() for r in caplog.records)


# --- the middleware: a session per request ----------------------------------


@pytest.fixture
def mw(verifier: Verifier) -> TestClient:
    return TestClient(make_app(verifier, middleware=True))


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_sudo_in_a_handler_runs_as_the_caller(mw: TestClient, token: str, kind: str) -> None:
    response = mw.post(f"/sudo/{kind}/order_7", headers=bearer(token))
    assert response.status_code == 200
    assert response.json() == {"result": "order_7 paid by SupportBot"}


def test_sync_handlers_run_in_the_threadpool_with_the_session(mw: TestClient, token: str) -> None:
    response = mw.post("/sync/refunds/o", headers=bearer(token))
    assert response.json()["thread"] != threading.main_thread().name


def test_sudo_without_the_scope_is_403(mw: TestClient, token: str) -> None:
    response = mw.delete("/sudo/customers/c1", headers=bearer(token))
    assert response.status_code == 403
    assert challenge(response).endswith('scope="delete:customers"')


def test_sudo_without_a_token_is_401(mw: TestClient) -> None:
    response = mw.post("/sudo/sync/o")
    assert response.status_code == 401
    assert challenge(response).startswith('Bearer error="invalid_token"')


def test_no_token_passes_through_to_public_routes(mw: TestClient) -> None:
    assert mw.get("/public").json() == {"agent": None}
    basic = mw.get("/public", headers={"Authorization": "Basic dXNlcjpwdw=="})
    assert basic.json() == {"agent": None}  # another scheme: not the middleware's business


def test_a_bad_token_is_refused_even_on_a_public_route(mw: TestClient, token: str) -> None:
    response = mw.get("/public", headers=bearer(_tampered(token)))
    assert response.status_code == 401
    assert challenge(response).startswith('Bearer error="invalid_token"')


def test_a_valid_token_makes_the_caller_current_on_public_routes(
    mw: TestClient, token: str
) -> None:
    assert mw.get("/public", headers=bearer(token)).json() == {"agent": "SupportBot"}


def test_concurrent_requests_each_see_their_own_agent(issuer: Issuer, verifier: Verifier) -> None:
    app = FastAPI()
    app.add_middleware(AgentSudoMiddleware, verifier=verifier)

    @app.get("/who")
    async def who() -> list[str]:
        seen = []
        for _ in range(20):
            await asyncio.sleep(0)  # let the other requests run in between
            agent = current_agent()
            seen.append(agent.name if agent else "-")
        return seen

    names = [f"Agent{i}" for i in range(8)]
    tokens = {name: issuer.issue(name, ["read:orders"]).token for name in names}

    async def main() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            calls = [client.get("/who", headers=bearer(tokens[n])) for n in names]
            calls.append(client.get("/who"))
            return await asyncio.gather(*calls)

    responses = asyncio.run(main())
    for name, response in zip(names, responses, strict=False):
        assert set(response.json()) == {name}
    assert set(responses[-1].json()) == {"-"}
    assert current_agent() is None  # nothing leaked into the test's own context


def test_a_websocket_with_a_bad_token_is_closed(verifier: Verifier) -> None:
    app = FastAPI()
    app.add_middleware(AgentSudoMiddleware, verifier=verifier)

    @app.websocket("/ws")
    async def ws(socket: WebSocket) -> None:
        await socket.accept()
        agent = current_agent()
        await socket.send_text(agent.name if agent else "-")
        await socket.close()

    client = TestClient(app)
    with pytest.raises(WebSocketDisconnect) as closed:
        with client.websocket_connect("/ws", headers=bearer("not.a.token")):
            pass
    assert closed.value.code == 1008


# --- where verification runs -------------------------------------------------


class SlowKeys:
    """A key source that is not local (like JWKS by URL): each look-up waits, then answers."""

    def __init__(self, keys: dict[str, PublicKey], delay: float) -> None:
        self.keys = keys
        self.delay = delay
        self.threads: list[int] = []

    def get(self, kid: str) -> PublicKey | None:
        self.threads.append(threading.get_ident())
        time.sleep(self.delay)  # a blocking fetch
        return self.keys.get(kid)


def _healthz_latency(app: FastAPI, token: str) -> tuple[float, int]:
    """Start a slow authenticated request and a public one just after; when did the public end?"""

    async def main() -> tuple[float, int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            started = time.perf_counter()
            slow = asyncio.ensure_future(client.get("/orders", headers=bearer(token)))
            await asyncio.sleep(0.02)  # the slow request is now waiting for its keys
            assert (await client.get("/healthz")).status_code == 200
            latency = time.perf_counter() - started
            return latency, (await slow).status_code

    return asyncio.run(main())


def _racing_app(keys: SlowKeys, in_thread: bool | None = None) -> FastAPI:
    app = FastAPI()
    app.add_middleware(AgentSudoMiddleware, verifier=Verifier(keys), in_thread=in_thread)

    @app.get("/healthz")
    async def healthz() -> str:
        return "ok"

    @app.get("/orders")
    async def orders(agent: Annotated[Agent, Depends(require_scope("read:orders"))]) -> str:
        return agent.name

    return app


def test_a_remote_key_source_is_asked_off_the_event_loop(key_dir: KeyDirectory, token: str) -> None:
    keys = SlowKeys(dict(key_dir.public_keys()), delay=0.5)
    latency, status = _healthz_latency(_racing_app(keys), token)
    assert status == 200
    assert latency < 0.3  # the loop kept serving while the keys were fetched
    assert keys.threads and threading.get_ident() not in keys.threads


def test_in_thread_false_verifies_on_the_loop(key_dir: KeyDirectory, token: str) -> None:
    keys = SlowKeys(dict(key_dir.public_keys()), delay=0.5)
    latency, status = _healthz_latency(_racing_app(keys, in_thread=False), token)
    assert status == 200
    assert latency >= 0.4  # the blocking look-up held the loop: why remote keys go to a thread


# --- a JWKS URL and a state store: what waits goes to a thread ---------------


class LoopThread:
    """An app whose ``/orders`` says which thread the event loop runs on."""

    def __init__(self, verifier: Verifier) -> None:
        self.app = FastAPI()
        self.app.add_middleware(AgentSudoMiddleware, verifier=verifier)

        @self.app.get("/orders")
        async def orders(agent: Annotated[Agent, Depends(require_scope("read:orders"))]) -> int:
            return threading.get_ident()

        self.client = TestClient(self.app)


@pytest.fixture
def jwks_url(key_dir: KeyDirectory) -> Iterator[str]:
    """The key directory's public keys served over HTTP on loopback."""
    from agentsudo_tokens.tokens.jwks_remote import serve_jwks

    server = serve_jwks(key_dir.public_keys, HOST, 0)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://{HOST}:{server.server_address[1]}/.well-known/jwks.json"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


class CountingUrl:
    """A ``JwksUrl`` whose look-ups record their thread, with a clock the test moves."""

    def __init__(self, url: str) -> None:
        from agentsudo_tokens.tokens.jwks_remote import JwksUrl

        self.now = 0.0
        self.source = JwksUrl(url, max_age=60, clock=lambda: self.now)
        self.threads: list[int] = []

    def get(self, kid: str) -> PublicKey | None:
        self.threads.append(threading.get_ident())
        return self.source.get(kid)

    def needs_fetch(self, kid: str) -> bool:
        return self.source.needs_fetch(kid)


def test_a_jwks_url_is_asked_on_the_loop_until_a_fetch_is_due(
    jwks_url: str, issuer: Issuer
) -> None:
    keys = CountingUrl(jwks_url)
    service = LoopThread(Verifier(keys, cache_size=0))  # type: ignore[arg-type]
    token = bearer(issuer.issue("SupportBot", GRANTED).token)
    with service.client as client:  # one event loop thread for every request
        loop = client.get("/orders", headers=token).json()
        assert keys.threads == [loop]  # keys in hand: a dict look-up, no thread hop
        keys.now = 61.0  # max_age passed: the next look-up fetches, so it leaves the loop
        assert client.get("/orders", headers=token).json() == loop
    assert len(keys.threads) == 2 and keys.threads[-1] != loop


class RecordingStore(Store):
    """A real SQLite store that notes the threads asking it, and can be switched off."""

    def __init__(self, path: Path) -> None:
        self.inner = open_store(f"sqlite:///{path}")
        self.url = self.inner.url
        self.threads: list[int] = []
        self.down = False

    def _use(self) -> Store:
        self.threads.append(threading.get_ident())
        if self.down:
            raise StoreUnavailableError("state store unreachable (test)")
        return self.inner

    def get_many(self, keys: Sequence[str]) -> list[str | None]:
        return self._use().get_many(keys)

    def put(self, key: str, value: str, *, expires_at: float) -> None:
        self._use().put(key, value, expires_at=expires_at)

    def add(self, key: str, value: str, *, expires_at: float) -> bool:
        return self._use().add(key, value, expires_at=expires_at)

    def take(self, key: str) -> str | None:
        return self._use().take(key)

    def items(self, prefix: str) -> dict[str, str]:
        return self._use().items(prefix)


def test_a_state_store_is_asked_off_the_loop_and_revocation_is_401(
    key_dir: KeyDirectory, issuer: Issuer, tmp_path: Path
) -> None:
    store = RecordingStore(tmp_path / "state.db")
    service = LoopThread(Verifier(key_dir.public_keys(), store=store))
    token = issuer.issue("SupportBot", GRANTED).token
    with service.client as client:
        loop = client.get("/orders", headers=bearer(token)).json()
        assert store.threads and loop not in store.threads
        revoke_token(store, token, reason="leaked")
        refused = client.get("/orders", headers=bearer(token))
    assert refused.status_code == 401
    assert challenge(refused).endswith('error_description="the token was revoked"')


@pytest.mark.parametrize("middleware", [False, True], ids=["dependency", "middleware"])
def test_an_unreachable_store_is_503_never_a_pass(
    key_dir: KeyDirectory, issuer: Issuer, tmp_path: Path, middleware: bool
) -> None:
    store = RecordingStore(tmp_path / "state.db")
    store.down = True
    verifier = Verifier(key_dir.public_keys(), store=store)
    client = TestClient(make_app(verifier, middleware=middleware))
    response = client.post("/sync/refunds/o", headers=bearer(issuer.issue("Bot", GRANTED).token))
    assert response.status_code == 503
    assert "state store is unavailable" in response.json()["detail"]


def test_a_request_without_a_token_never_runs_as_the_services_own_agent(
    tmp_path: Path, key_dir: KeyDirectory, issuer: Issuer
) -> None:
    """The service process has an ambient AGENTSUDO_TOKEN; a tokenless request must not use it."""
    import os
    import subprocess
    import sys
    import textwrap

    service_token = issuer.issue("BillingService", "write:refunds").token
    script = tmp_path / "svc.py"
    script.write_text(
        textwrap.dedent(
            """
            from fastapi import FastAPI
            from fastapi.testclient import TestClient
            from agentsudo_tokens import current_agent, sudo
            from agentsudo_tokens.integrations.fastapi import AgentSudoMiddleware

            @sudo(scope="write:refunds")
            def pay_out():
                return "paid"

            app = FastAPI()
            app.add_middleware(AgentSudoMiddleware)

            @app.post("/refunds")
            def refund():
                return {"receipt": pay_out()}

            print("ambient:", current_agent().name)
            response = TestClient(app).post("/refunds")
            print("status:", response.status_code)
            """
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTSUDO_")}
    env.update(AGENTSUDO_TOKEN=service_token, AGENTSUDO_JWKS=str(key_dir.jwks_path))
    done = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=60
    )
    assert "ambient: BillingService" in done.stdout, done.stderr
    assert "status: 401" in done.stdout, done.stdout + done.stderr


def test_without_agent_shuts_out_sessions_and_the_ambient_agent() -> None:
    from agentsudo_tokens import PermissionDeniedError, current_agent, sudo, without_agent

    @sudo(scope="read:x")
    def read() -> str:
        return "read"

    with Agent("Outer", ["read:x"]).start_session():
        with without_agent():
            assert current_agent() is None
            with pytest.raises(PermissionDeniedError, match="no active agent session"):
                read()
            with Agent("Inner", ["read:x"]).start_session():
                assert read() == "read"
        assert read() == "read"
