"""``AgentTokenAuth``: the acting agent's token goes out as a Bearer header, read at send time."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from fastapi import Depends, FastAPI

from agentsudo_tokens import Agent, Issuer, KeyDirectory, PermissionDeniedError, Verifier
from agentsudo_tokens.guard.propagation import ContextThreadPoolExecutor
from agentsudo_tokens.integrations.fastapi import AgentSudoMiddleware, require_scope
from agentsudo_tokens.integrations.httpx import AgentTokenAuth


def echo(request: httpx.Request) -> httpx.Response:
    """A transport that answers with the Authorization header it received."""
    return httpx.Response(200, json={"authorization": request.headers.get("authorization")})


def sent_header(client: httpx.Client) -> str | None:
    return client.get("http://service.test/").json()["authorization"]  # type: ignore[no-any-return]


@pytest.fixture
def client() -> httpx.Client:
    return httpx.Client(transport=httpx.MockTransport(echo), auth=AgentTokenAuth())


def test_the_session_token_is_sent(
    client: httpx.Client, issuer: Issuer, verifier: Verifier
) -> None:
    token = issuer.issue("SupportBot", ["read:orders"]).token
    with Agent.from_token(token, verifier=verifier).start_session():
        assert sent_header(client) == f"Bearer {token}"


def test_the_token_is_read_when_sending_not_when_the_client_is_made(
    client: httpx.Client, issuer: Issuer, verifier: Verifier
) -> None:
    first = issuer.issue("A", ["read:orders"]).token
    second = issuer.issue("B", ["read:orders"]).token
    with Agent.from_token(first, verifier=verifier).start_session():
        assert sent_header(client) == f"Bearer {first}"
        with Agent.from_token(second, verifier=verifier).start_session():
            assert sent_header(client) == f"Bearer {second}"
        assert sent_header(client) == f"Bearer {first}"


def test_no_agent_means_the_request_is_not_sent() -> None:
    calls: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(200)

    client = httpx.Client(transport=httpx.MockTransport(record), auth=AgentTokenAuth())
    with pytest.raises(PermissionDeniedError, match="no active agent session"):
        client.get("http://service.test/")
    with Agent("Local", ["read:orders"]).start_session():
        with pytest.raises(PermissionDeniedError, match="unsigned in-process agent"):
            client.get("http://service.test/")
    assert calls == []


def test_the_ambient_token_is_sent(
    client: httpx.Client, issuer: Issuer, key_dir: KeyDirectory, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = issuer.issue("AmbientBot", ["read:orders"]).token
    monkeypatch.setenv("AGENTSUDO_TOKEN", token)
    monkeypatch.setenv("AGENTSUDO_JWKS", str(key_dir.jwks_path))
    assert sent_header(client) == f"Bearer {token}"


def test_async_tasks_each_send_their_own_token(issuer: Issuer, verifier: Verifier) -> None:
    tokens = {name: issuer.issue(name, ["read:orders"]).token for name in ("A", "B", "C")}

    async def call_as(client: httpx.AsyncClient, name: str) -> list[str | None]:
        async with Agent.from_token(tokens[name], verifier=verifier).start_session():
            seen = []
            for _ in range(5):
                await asyncio.sleep(0)
                response = await client.get("http://service.test/")
                seen.append(response.json()["authorization"])
            return seen

    async def main() -> list[list[str | None]]:
        transport = httpx.MockTransport(echo)
        async with httpx.AsyncClient(transport=transport, auth=AgentTokenAuth()) as client:
            return await asyncio.gather(*(call_as(client, name) for name in tokens))

    for name, seen in zip(tokens, asyncio.run(main()), strict=True):
        assert set(seen) == {f"Bearer {tokens[name]}"}


def test_pool_workers_send_their_submitters_token(
    client: httpx.Client, issuer: Issuer, verifier: Verifier
) -> None:
    token = issuer.issue("SupportBot", ["read:orders"]).token
    with ContextThreadPoolExecutor(max_workers=3) as pool:
        with Agent.from_token(token, verifier=verifier).start_session():
            headers = list(pool.map(lambda _: sent_header(client), range(6)))
    assert set(headers) == {f"Bearer {token}"}


def test_a_service_accepts_what_the_auth_sends(issuer: Issuer, verifier: Verifier) -> None:
    app = FastAPI()
    app.add_middleware(AgentSudoMiddleware, verifier=verifier)

    @app.get("/orders")
    async def orders(agent: Agent = Depends(require_scope("read:orders"))) -> str:  # noqa: B008
        return agent.name

    token = issuer.issue("SupportBot", ["read:orders"]).token

    async def main() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://billing.test", auth=AgentTokenAuth()
        ) as service:
            async with Agent.from_token(token, verifier=verifier).start_session():
                return await service.get("/orders")

    response = asyncio.run(main())
    assert response.status_code == 200 and response.json() == "SupportBot"


def test_the_auth_never_shows_the_token() -> None:
    assert repr(AgentTokenAuth()) == "AgentTokenAuth()"
