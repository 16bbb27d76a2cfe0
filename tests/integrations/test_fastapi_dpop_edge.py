"""FastAPI with DPoP at the edge: the service's origin, the Host header, and a dependency whose
proof verifier asks more than the middleware's.

A real FastAPI app through httpx's ``ASGITransport`` (``AppClient``); the agent
side is the real ``AgentTokenAuth``.
"""

# No ``from __future__ import annotations``: FastAPI must see the closures' annotations.
from typing import Annotated

import httpx
import pytest
from fastapi import Depends, FastAPI
from test_fastapi_dpop import BASE, AppClient, make_app

from agentsudo_tokens import Agent, Issuer, KeyDirectory, Verifier
from agentsudo_tokens.integrations.fastapi import AgentSudoMiddleware, require_scope
from agentsudo_tokens.integrations.httpx import AgentTokenAuth
from agentsudo_tokens.state import open_store
from agentsudo_tokens.state.replay import StoreReplayCache
from agentsudo_tokens.tokens.dpop import DPoPKey
from agentsudo_tokens.tokens.dpop_nonce import DPoPNonces
from agentsudo_tokens.tokens.dpop_proof import ProofVerifier

ORIGIN = "https://billing.example"


@pytest.fixture
def dpop_key() -> DPoPKey:
    return DPoPKey.generate()


@pytest.fixture
def bound(issuer: Issuer, dpop_key: DPoPKey) -> str:
    return issuer.issue("SupportBot", ["read:orders", "write:refunds"], jkt=dpop_key.jkt).token


def challenge(response: httpx.Response) -> str:
    return response.headers.get("www-authenticate", "")


def send(client: AppClient, key: DPoPKey, token: str, url: str, **headers: str) -> httpx.Response:
    """``POST /refunds`` with a proof made for ``url``."""
    proof = key.proof("POST", url, token=token)
    return client.post("/refunds", headers={"Authorization": f"DPoP {token}", "DPoP": proof,
                                            **headers})  # fmt: skip


# -- the URL a proof must name -------------------------------------------------------------------


@pytest.mark.parametrize("middleware", [True, False], ids=["middleware", "dependency"])
@pytest.mark.parametrize("configured", ["argument", "variable"])
def test_with_an_origin_a_proof_for_another_host_is_refused_whatever_the_host_header(
    verifier: Verifier,
    bound: str,
    dpop_key: DPoPKey,
    middleware: bool,
    configured: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if configured == "variable":
        monkeypatch.setenv("AGENTSUDO_DPOP_ORIGIN", ORIGIN + "/")
        proofs = None  # the default proof verifier, and a given one without an origin
        given = ProofVerifier()
    else:
        proofs = given = ProofVerifier(origin=ORIGIN)
    for checker in (proofs, given):
        client = AppClient(make_app(verifier, middleware=middleware, proofs=checker))
        other = send(client, dpop_key, bound, "http://orders.example/refunds",
                     Host="orders.example")  # fmt: skip
        assert other.status_code == 401, other.text
        assert 'error="invalid_dpop_proof"' in challenge(other)
        assert "made for URL 'http://orders.example/refunds'" in challenge(other)
        own_host = send(client, dpop_key, bound, f"{BASE}/refunds")  # the Host header's URL
        assert own_host.status_code == 401 and "made for URL" in challenge(own_host)
        served = send(client, dpop_key, bound, f"{ORIGIN}/refunds", Host="10.0.0.7:8000")
        assert served.status_code == 200, served.text


def test_a_bad_origin_variable_is_a_503_not_a_guess(
    verifier: Verifier, bound: str, dpop_key: DPoPKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTSUDO_DPOP_ORIGIN", "billing.example")
    client = AppClient(make_app(verifier, middleware=True))
    answer = send(client, dpop_key, bound, "http://billing.example/refunds")
    assert answer.status_code == 503
    assert answer.json() == {
        "detail": "cannot check the token now: the service cannot verify tokens"
    }


def test_without_an_origin_a_host_header_that_is_no_host_is_refused(
    verifier: Verifier, bound: str, dpop_key: DPoPKey
) -> None:
    """``Host: testserver/admin`` would turn ``POST /refunds`` into the URL of a proof made
    for ``/admin/refunds``."""
    client = AppClient(make_app(verifier, middleware=True))
    answer = send(client, dpop_key, bound, f"{BASE}/admin/refunds", Host="testserver/admin")
    assert answer.status_code == 401
    assert "Host header is not a host[:port]" in challenge(answer)
    assert send(client, dpop_key, bound, f"{BASE}/refunds").status_code == 200


# -- a dependency with a proof verifier of its own, behind the middleware ------------------------


def _nonce_app(verifier: Verifier, dependency_proofs: ProofVerifier, *, own: bool) -> FastAPI:
    """The middleware with the verifier's default proofs; the route's dependency with its own
    (and, when ``own``, the verifier given again)."""
    app = FastAPI()
    app.add_middleware(AgentSudoMiddleware, verifier=verifier)
    refunds = require_scope(
        "write:refunds", verifier=verifier if own else None, proofs=dependency_proofs
    )

    @app.post("/refunds")
    def refund(agent: Annotated[Agent, Depends(refunds)]) -> dict[str, str]:
        return {"by": agent.name}

    return app


@pytest.mark.parametrize("own", [False, True], ids=["middleware-verdict", "own-verifier"])
def test_a_dependencys_nonces_hold_behind_the_middleware(
    verifier: Verifier, bound: str, dpop_key: DPoPKey, own: bool
) -> None:
    nonces = DPoPNonces()
    client = AppClient(_nonce_app(verifier, ProofVerifier(nonces=nonces), own=own))
    without = send(client, dpop_key, bound, f"{BASE}/refunds")
    assert without.status_code == 401, without.text
    assert 'DPoP error="use_dpop_nonce"' in challenge(without)
    assert without.headers["dpop-nonce"] == nonces.current()
    with Agent.from_token(bound, verifier=verifier).start_session():
        answer = client.post("/refunds", auth=AgentTokenAuth(dpop_key=dpop_key))
    assert answer.status_code == 200, answer.text
    assert [r.status_code for r in client.seen] == [401, 401, 200]  # asked, then served


def test_a_second_check_sharing_the_replay_cache_is_not_a_replay(
    key_dir: KeyDirectory, bound: str, dpop_key: DPoPKey
) -> None:
    """The middleware's proof verifier and the dependency's record proofs in one store: the
    dependency's check of the same request is no replay; a second request with it is."""
    store = open_store(f"sqlite:///{key_dir.path}/state.db")
    verifier = Verifier(key_dir.public_keys(), store=store)
    nonces = DPoPNonces()
    proofs = ProofVerifier(replay=StoreReplayCache(store), nonces=nonces)
    client = AppClient(_nonce_app(verifier, proofs, own=False))
    proof = dpop_key.proof("POST", f"{BASE}/refunds", token=bound, nonce=nonces.current())
    headers = {"Authorization": f"DPoP {bound}", "DPoP": proof}
    assert client.post("/refunds", headers=headers).status_code == 200
    again = client.post("/refunds", headers=headers)
    assert again.status_code == 401 and "used before" in challenge(again)
