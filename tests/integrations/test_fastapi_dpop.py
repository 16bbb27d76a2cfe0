"""FastAPI with tokens bound to a key (DPoP, RFC 9449): the proof is checked at the edge.

Requests go through httpx's ``ASGITransport`` into a real FastAPI app; the
agent side is the real ``AgentTokenAuth``, signing a proof per request.
"""

# No ``from __future__ import annotations``: FastAPI must see the closures' annotations.
import asyncio
from typing import Annotated, Any

import httpx
import pytest
from fastapi import Depends, FastAPI

from agentsudo_tokens import Agent, Issuer, KeyDirectory, PermissionDeniedError, Verifier
from agentsudo_tokens.integrations.dpop import default_proofs
from agentsudo_tokens.integrations.fastapi import AgentSudoMiddleware, require_scope
from agentsudo_tokens.integrations.httpx import AgentTokenAuth
from agentsudo_tokens.state import open_store
from agentsudo_tokens.state.replay import MemoryReplayCache, StoreReplayCache
from agentsudo_tokens.tokens.dpop import DPoPKey
from agentsudo_tokens.tokens.dpop_nonce import DPoPNonces
from agentsudo_tokens.tokens.dpop_proof import ProofVerifier

BASE = "http://testserver"


class AppClient:
    """Requests into the app through httpx's ``ASGITransport``, in this thread's context (so
    a session opened here is the sending agent's); ``seen`` collects every response."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.seen: list[httpx.Response] = []

    def request(self, method: str, url: str, **options: Any) -> httpx.Response:
        async def send() -> httpx.Response:
            async def note(response: httpx.Response) -> None:
                self.seen.append(response)

            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(
                transport=transport, base_url=BASE, event_hooks={"response": [note]}
            ) as client:
                return await client.request(method, url, **options)

        return asyncio.run(send())

    def get(self, url: str, **options: Any) -> httpx.Response:
        return self.request("GET", url, **options)

    def post(self, url: str, **options: Any) -> httpx.Response:
        return self.request("POST", url, **options)

    def delete(self, url: str, **options: Any) -> httpx.Response:
        return self.request("DELETE", url, **options)


def make_app(
    verifier: Verifier, *, middleware: bool, proofs: ProofVerifier | None = None
) -> FastAPI:
    refunds = require_scope("write:refunds", verifier=verifier, proofs=proofs)
    reads = require_scope("read:orders", verifier=verifier, proofs=proofs)
    deletes = require_scope("delete:customers", verifier=verifier, proofs=proofs)
    app = FastAPI()
    if middleware:
        app.add_middleware(AgentSudoMiddleware, verifier=verifier, proofs=proofs)

    @app.post("/refunds")
    def refund(agent: Annotated[Agent, Depends(refunds)]) -> dict[str, str]:
        return {"by": agent.name}

    @app.get("/orders/{order_id}")
    async def order(
        order_id: str,
        agent: Annotated[Agent, Depends(reads)],
        again: Annotated[Agent, Depends(refunds)],  # two checks of one request: one proof
    ) -> dict[str, str]:
        return {"order": order_id, "by": agent.name}

    @app.delete("/customers/{customer_id}")
    def delete(customer_id: str, agent: Annotated[Agent, Depends(deletes)]) -> dict[str, str]:
        return {"deleted": customer_id}

    return app


@pytest.fixture(params=["EdDSA", "ES256"])
def dpop_key(request: pytest.FixtureRequest) -> DPoPKey:
    return DPoPKey.generate(request.param)


@pytest.fixture
def bound(issuer: Issuer, dpop_key: DPoPKey) -> str:
    return issuer.issue("SupportBot", ["read:orders", "write:refunds"], jkt=dpop_key.jkt).token


@pytest.fixture(params=[True, False], ids=["middleware", "dependency"])
def client(request: pytest.FixtureRequest, verifier: Verifier) -> AppClient:
    return AppClient(make_app(verifier, middleware=request.param))


def challenge(response: httpx.Response) -> str:
    return response.headers.get("www-authenticate", "")


def test_a_bound_token_with_its_proofs_is_served(
    client: AppClient, bound: str, verifier: Verifier, dpop_key: DPoPKey
) -> None:
    auth = AgentTokenAuth(dpop_key=dpop_key)
    with Agent.from_token(bound, verifier=verifier).start_session():
        for _ in range(3):  # a fresh proof each time
            answer = client.post("/refunds", auth=auth)
            assert answer.status_code == 200, answer.text
            assert answer.json() == {"by": "SupportBot"}
        assert client.get("/orders/o-1?expand=items", auth=auth).status_code == 200
        sent = client.post("/refunds", auth=auth).request
    assert sent.headers["authorization"] == f"DPoP {bound}"
    assert sent.headers["dpop"].count(".") == 2


def test_a_bound_token_sent_as_a_bearer_token_is_refused(client: AppClient, bound: str) -> None:
    answer = client.post("/refunds", headers={"Authorization": f"Bearer {bound}"})
    assert answer.status_code == 401
    assert challenge(answer).startswith('DPoP error="invalid_token", error_description="the token')
    assert "bound to a key" in answer.json()["detail"]
    assert 'algs="EdDSA ES256"' in challenge(answer)


def test_a_dpop_token_without_a_proof_is_refused(client: AppClient, bound: str) -> None:
    answer = client.post("/refunds", headers={"Authorization": f"DPoP {bound}"})
    assert answer.status_code == 401
    assert challenge(answer).startswith('DPoP error="invalid_dpop_proof"')
    assert "exactly one DPoP header, found 0" in challenge(answer)


def test_a_replayed_proof_is_refused(
    client: AppClient, bound: str, verifier: Verifier, dpop_key: DPoPKey
) -> None:
    proof = dpop_key.proof("POST", f"{BASE}/refunds", token=bound)
    headers = {"Authorization": f"DPoP {bound}", "DPoP": proof}
    assert client.post("/refunds", headers=headers).status_code == 200
    again = client.post("/refunds", headers=headers)
    assert again.status_code == 401
    assert 'error="invalid_dpop_proof"' in challenge(again) and "used before" in challenge(again)


@pytest.mark.parametrize(
    ("method", "url", "why"),
    [
        ("GET", f"{BASE}/refunds", "made for method 'GET'"),
        ("POST", f"{BASE}/orders/o-1", "made for URL"),
        ("POST", "http://elsewhere.example/refunds", "made for URL"),
    ],
    ids=["wrong-method", "wrong-path", "wrong-host"],
)
def test_a_proof_for_another_request_is_refused(
    client: AppClient, bound: str, dpop_key: DPoPKey, method: str, url: str, why: str
) -> None:
    proof = dpop_key.proof(method, url, token=bound)
    answer = client.post("/refunds", headers={"Authorization": f"DPoP {bound}", "DPoP": proof})
    assert answer.status_code == 401
    assert 'error="invalid_dpop_proof"' in challenge(answer) and why in challenge(answer)


def test_a_proof_by_another_key_is_refused(client: AppClient, bound: str) -> None:
    thief = DPoPKey.generate()
    proof = thief.proof("POST", f"{BASE}/refunds", token=bound)
    answer = client.post("/refunds", headers={"Authorization": f"DPoP {bound}", "DPoP": proof})
    assert answer.status_code == 401
    assert challenge(answer).startswith('DPoP error="invalid_token"')
    assert "another key" in challenge(answer)


def test_a_proof_for_another_token_is_refused(
    client: AppClient, bound: str, issuer: Issuer, dpop_key: DPoPKey
) -> None:
    other = issuer.issue("SupportBot", ["write:refunds"], jkt=dpop_key.jkt).token
    proof = dpop_key.proof("POST", f"{BASE}/refunds", token=other)
    answer = client.post("/refunds", headers={"Authorization": f"DPoP {bound}", "DPoP": proof})
    assert answer.status_code == 401 and "ath is not the hash" in challenge(answer)


def test_two_proof_headers_are_refused(client: AppClient, bound: str, dpop_key: DPoPKey) -> None:
    proof = dpop_key.proof("POST", f"{BASE}/refunds", token=bound)
    headers = [("Authorization", f"DPoP {bound}"), ("DPoP", proof), ("DPoP", proof)]
    answer = client.post("/refunds", headers=headers)
    assert answer.status_code == 401 and "found 2" in challenge(answer)


def test_a_plain_token_works_as_before_and_not_as_dpop(
    client: AppClient, issuer: Issuer, verifier: Verifier
) -> None:
    plain = issuer.issue("SupportBot", ["write:refunds"]).token
    with Agent.from_token(plain, verifier=verifier).start_session():
        answer = client.post("/refunds", auth=AgentTokenAuth())
    assert answer.status_code == 200
    assert answer.request.headers["authorization"] == f"Bearer {plain}"
    assert "dpop" not in answer.request.headers
    proof = DPoPKey.generate().proof("POST", f"{BASE}/refunds", token=plain)
    refused = client.post("/refunds", headers={"Authorization": f"DPoP {plain}", "DPoP": proof})
    assert refused.status_code == 401 and "not bound to a key" in challenge(refused)
    bad = client.post("/refunds", headers={"Authorization": "Bearer nope"})
    assert challenge(bad) == (
        'Bearer error="invalid_token", error_description="the token is malformed"'
    )


def test_a_missing_scope_is_a_dpop_403(
    client: AppClient, bound: str, verifier: Verifier, dpop_key: DPoPKey
) -> None:
    with Agent.from_token(bound, verifier=verifier).start_session():
        answer = client.delete("/customers/c-1", auth=AgentTokenAuth(dpop_key=dpop_key))
    assert answer.status_code == 403
    assert challenge(answer).startswith('DPoP error="insufficient_scope"')


def test_an_expired_bound_token_gets_a_dpop_challenge(
    client: AppClient, issuer: Issuer, dpop_key: DPoPKey
) -> None:
    old = issuer.issue("SupportBot", ["write:refunds"], jkt=dpop_key.jkt, now=1_000_000).token
    proof = dpop_key.proof("POST", f"{BASE}/refunds", token=old)
    answer = client.post("/refunds", headers={"Authorization": f"DPoP {old}", "DPoP": proof})
    assert answer.status_code == 401
    assert challenge(answer).startswith(
        'DPoP error="invalid_token", error_description="the token has expired"'
    )


@pytest.mark.parametrize("middleware", [True, False], ids=["middleware", "dependency"])
def test_a_service_demanding_nonces_gets_one_retry(
    verifier: Verifier, bound: str, dpop_key: DPoPKey, middleware: bool
) -> None:
    nonces = DPoPNonces()
    app = make_app(verifier, middleware=middleware, proofs=ProofVerifier(nonces=nonces))
    client = AppClient(app)
    seen = client.seen
    auth = AgentTokenAuth(dpop_key=dpop_key)
    with Agent.from_token(bound, verifier=verifier).start_session():
        answer = client.post("/refunds", auth=auth)
        assert answer.status_code == 200, answer.text
        assert [r.status_code for r in seen] == [401, 200]  # asked for the nonce, then served
        assert seen[0].headers["dpop-nonce"] == nonces.current()
        assert 'DPoP error="use_dpop_nonce"' in challenge(seen[0])
        seen.clear()
        assert client.post("/refunds", auth=auth).status_code == 200
        assert [r.status_code for r in seen] == [200]  # the nonce is remembered


def test_a_bound_token_is_not_sent_without_its_key(
    client: AppClient, bound: str, verifier: Verifier
) -> None:
    with Agent.from_token(bound, verifier=verifier).start_session():
        with pytest.raises(PermissionDeniedError, match="bound to a key this process does not"):
            client.post("/refunds", auth=AgentTokenAuth())
        with pytest.raises(PermissionDeniedError, match="does not hold"):
            client.post("/refunds", auth=AgentTokenAuth(dpop_key=DPoPKey.generate()))


def test_the_default_replay_cache_is_the_verifiers_store(key_dir: KeyDirectory) -> None:
    plain = Verifier(key_dir.public_keys())
    assert isinstance(default_proofs(plain).replay, MemoryReplayCache)
    assert default_proofs(plain) is default_proofs(plain)
    stored = Verifier(key_dir.public_keys(), store=open_store(f"sqlite:///{key_dir.path}/s.db"))
    replay = default_proofs(stored).replay
    assert isinstance(replay, StoreReplayCache) and replay.store is stored.store


def test_a_service_with_a_store_refuses_a_proof_replayed_to_another_process(
    key_dir: KeyDirectory, issuer: Issuer, dpop_key: DPoPKey
) -> None:
    """Two app instances (as two worker processes would be) share the store's replay cache."""
    url = f"sqlite:///{key_dir.path}/state.db"
    apps = [
        AppClient(make_app(Verifier(key_dir.public_keys(), store=open_store(url)), middleware=m))
        for m in (True, False)
    ]
    bound = issuer.issue("SupportBot", ["write:refunds"], jkt=dpop_key.jkt).token
    headers = {
        "Authorization": f"DPoP {bound}",
        "DPoP": dpop_key.proof("POST", f"{BASE}/refunds", token=bound),
    }
    assert apps[0].post("/refunds", headers=headers).status_code == 200
    replayed = apps[1].post("/refunds", headers=headers)
    assert replayed.status_code == 401 and "used before" in challenge(replayed)
