"""End to end with real processes: an agent with a token bound to its key, a real uvicorn
service, and a thief holding everything the service's access log recorded.

``agentsudo run --dpop`` starts ``examples/services/agent.py`` with a bound
token and its key (through a pipe); the billing service (two uvicorn workers
sharing a SQLite store, so a replay to the other worker is caught too) logs
every request's headers. The thief replays the logged token and proofs: every
attempt is refused, while a plain bearer token keeps working as before.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from test_services_e2e import AGENTSUDO, HOST, ROOT, free_port, stop, wait_until_up

from agentsudo_tokens.tokens.dpop import DPoPKey

E2E = Path(__file__).resolve().parent


@dataclass
class Service:
    url: str
    log: Path
    workdir: Path
    env: dict[str, str]


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    workdir = tmp_path_factory.mktemp("dpop-e2e")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTSUDO_")}
    done = subprocess.run(
        [AGENTSUDO, "keys", "init"], cwd=workdir, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    port = free_port()
    log = workdir / "access.jsonl"
    server_env = {
        **env,
        "AGENTSUDO_JWKS": str(workdir / "keys" / "jwks.json"),
        "AGENTSUDO_AUDIENCE": "billing",
        "AGENTSUDO_STORE": f"sqlite:///{workdir / 'service-state.db'}",
        "CARELESS_LOG": str(log),
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "careless_billing:app", "--app-dir", str(E2E),
         "--host", HOST, "--port", str(port), "--workers", "2", "--log-level", "warning"],
        cwd=workdir, env=server_env, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        wait_until_up(f"http://{HOST}:{port}/healthz", server, timeout=30)
        yield Service(f"http://{HOST}:{port}", log, workdir, env)
    finally:
        stop(server)
        if server.stderr is not None:
            server.stderr.close()


def _logged(service: Service, method: str, path: str) -> dict[str, str]:
    for line in reversed(service.log.read_text().splitlines()):
        entry = json.loads(line)
        if entry["method"] == method and entry["path"] == path:
            return dict(entry["headers"])
    raise AssertionError(f"no {method} {path} in the access log")


def _challenge(response: httpx.Response) -> str:
    return response.headers.get("www-authenticate", "")


def test_the_agent_works_with_a_bound_token_and_a_thief_gets_nothing(service: Service) -> None:
    agent = subprocess.run(
        [AGENTSUDO, "run", "--dpop", "--agent", "SupportBot",
         "--scopes", "read:orders,write:refunds", "--aud", "agentsudo", "--aud", "billing",
         "--", sys.executable, str(ROOT / "examples" / "services" / "agent.py"), service.url],
        cwd=service.workdir, env=service.env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert agent.returncode == 0, agent.stdout + agent.stderr
    assert "all outcomes as expected" in agent.stdout

    logged = _logged(service, "POST", "/refunds")
    scheme, token = logged["authorization"].split(" ", 1)
    assert scheme == "DPoP" and logged["dpop"]  # what the thief now holds
    refund = {"order_id": "order_999", "amount": 500}
    with httpx.Client(base_url=service.url, timeout=10) as thief:
        bearer = {"Authorization": f"Bearer {token}"}
        as_bearer = thief.post("/refunds", json=refund, headers=bearer)
        assert as_bearer.status_code == 401
        assert _challenge(as_bearer).startswith('DPoP error="invalid_token"')
        no_proof = thief.post("/refunds", json=refund, headers={"Authorization": f"DPoP {token}"})
        assert no_proof.status_code == 401 and "invalid_dpop_proof" in _challenge(no_proof)
        stolen = {"Authorization": f"DPoP {token}", "DPoP": logged["dpop"]}
        for _ in range(4):  # the replay cache is the shared store: each worker refuses it
            replayed = thief.post("/refunds", json=refund, headers=stolen)
            assert replayed.status_code == 401 and "used before" in _challenge(replayed)
        elsewhere = thief.get("/orders/order_1", headers=stolen)
        assert elsewhere.status_code == 401 and "invalid_dpop_proof" in _challenge(elsewhere)
        own_key = DPoPKey.generate().proof("POST", f"{service.url}/refunds", token=token)
        forged = thief.post(
            "/refunds", json=refund, headers={"Authorization": f"DPoP {token}", "DPoP": own_key}
        )
        assert forged.status_code == 401 and "another key" in _challenge(forged)


def test_a_plain_bearer_token_works_as_before(service: Service) -> None:
    done = subprocess.run(
        [AGENTSUDO, "issue", "--agent", "SupportBot", "--scopes", "read:orders",
         "--aud", "billing"],
        cwd=service.workdir, env=service.env, capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    headers = {"Authorization": f"Bearer {done.stdout.strip()}"}
    answer = httpx.get(f"{service.url}/orders/order_1", headers=headers, timeout=10)
    assert answer.status_code == 200 and answer.json()["read_by"] == "SupportBot"
