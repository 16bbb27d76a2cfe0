"""DPoP between real uvicorn services that keep no state: the origin a proof must name, and
worker processes that cannot share a replay cache in memory.

Each service is the billing example (``examples/services``), configured as one
under a broker is: public keys from a JWKS file, revocations from a signed list
(``AGENTSUDO_REVOCATIONS``), no ``AGENTSUDO_STORE``. Its DPoP replay cache is
then in its memory.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from test_services_e2e import HOST, SERVICES, free_port, stop, wait_until_up

from agentsudo_tokens import Issuer, KeyDirectory
from agentsudo_tokens.state import open_store
from agentsudo_tokens.tokens.dpop import DPoPKey
from agentsudo_tokens.tokens.revocation_list import MAX_LIST_TTL, build_revocation_list

REFUND = {"order_id": "order_9", "amount": 50}


@dataclass(frozen=True)
class Setup:
    env: dict[str, str]  # a stateless service's settings
    issuer: Issuer
    key: DPoPKey

    def bound(self) -> str:
        return self.issuer.issue("SupportBot", ["write:refunds"], jkt=self.key.jkt).token

    def dpop(self, url: str, token: str) -> dict[str, str]:
        return {"Authorization": f"DPoP {token}", "DPoP": self.key.proof("POST", url, token=token)}


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Setup:
    workdir = tmp_path_factory.mktemp("dpop-stateless")
    keys = KeyDirectory.init(workdir / "keys")
    listed = workdir / "revocations.jwt"
    empty = open_store(f"sqlite:///{workdir / 'issuer-state.db'}")
    listed.write_text(
        build_revocation_list(empty, keys.signing_key(), issuer="agentsudo", ttl=MAX_LIST_TTL)
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTSUDO_")}
    env.update(
        AGENTSUDO_JWKS=str(keys.jwks_path),
        AGENTSUDO_AUDIENCE="billing",
        AGENTSUDO_REVOCATIONS=str(listed),
    )
    return Setup(env, Issuer(keys.signing_key(), audience="billing"), DPoPKey.generate())


@contextmanager
def billing(env: dict[str, str], *options: str) -> Iterator[str]:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "billing_service:app", "--app-dir", str(SERVICES),
         "--host", HOST, "--port", str(port), "--log-level", "critical", *options],
        env=env, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_until_up(f"http://{HOST}:{port}/healthz", server, timeout=30)
        yield f"http://{HOST}:{port}"
    finally:
        stop(server)


def test_a_proof_for_one_service_is_refused_by_another_whatever_the_host(setup: Setup) -> None:
    """Two services, each knowing its public origin: a proof signed for billing, sent to
    orders with ``Host: billing.example``, is refused there; billing takes it once."""
    public = "http://billing.example"
    with (
        billing({**setup.env, "AGENTSUDO_DPOP_ORIGIN": public}) as billing_url,
        billing({**setup.env, "AGENTSUDO_DPOP_ORIGIN": "http://orders.example"}) as orders_url,
    ):
        token = setup.bound()
        headers = setup.dpop(f"{public}/refunds", token)
        spoofed = httpx.post(f"{orders_url}/refunds", json=REFUND, timeout=10,
                             headers={**headers, "Host": "billing.example"})  # fmt: skip
        assert spoofed.status_code == 401, spoofed.text
        assert "made for URL" in spoofed.headers["www-authenticate"]
        served = httpx.post(f"{billing_url}/refunds", json=REFUND, headers=headers, timeout=10)
        assert served.status_code == 200, served.text  # its Host is 127.0.0.1:port: not asked
        again = httpx.post(f"{billing_url}/refunds", json=REFUND, headers=headers, timeout=10)
        assert again.status_code == 401 and "used before" in again.headers["www-authenticate"]


def test_workers_with_the_replay_cache_in_memory_refuse_dpop(setup: Setup) -> None:
    """``--workers 2`` and no store: each worker would accept a proof once. Every DPoP
    request is a 503 naming the fix; bearer tokens are served as before."""
    with billing(setup.env, "--workers", "2") as url:
        token = setup.bound()
        answers = [
            httpx.post(f"{url}/refunds", json=REFUND, timeout=10,
                       headers=setup.dpop(f"{url}/refunds", token))
            for _ in range(6)
        ]  # fmt: skip
        assert {a.status_code for a in answers} == {503}, [a.text for a in answers]
        assert answers[0].json() == {
            "detail": "cannot check the token now: the DPoP replay cache is one worker's; "
            "set AGENTSUDO_STORE"
        }
        plain = setup.issuer.issue("SupportBot", ["write:refunds"]).token
        bearer = {"Authorization": f"Bearer {plain}"}
        served = httpx.post(f"{url}/refunds", json=REFUND, headers=bearer, timeout=10)
        assert served.status_code == 200, served.text


def test_workers_sharing_a_store_take_each_proof_once(setup: Setup, tmp_path: Path) -> None:
    env = {**setup.env, "AGENTSUDO_STORE": f"sqlite:///{tmp_path / 'service-state.db'}"}
    with billing(env, "--workers", "2") as url:
        token = setup.bound()
        headers = setup.dpop(f"{url}/refunds", token)
        codes = [
            httpx.post(f"{url}/refunds", json=REFUND, headers=headers, timeout=10).status_code
            for _ in range(6)
        ]
        assert codes == [200] + [401] * 5
