"""End to end with real processes on loopback: issuer CLI, JWKS server, billing service, agent.

No mocks of the network or the server: ``agentsudo`` makes the keys, serves
the public ones over HTTP (``agentsudo keys serve``) and mints; uvicorn runs
``examples/services/billing_service.py``, and ``examples/services/agent.py``
calls it with the token from ``AGENTSUDO_TOKEN``. Every process is stopped
when the module's tests end, whatever happens.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ROOT / "examples" / "services"
AGENTSUDO = Path(sys.executable).parent / "agentsudo"
HOST = "127.0.0.1"
SCOPES = "read:orders,write:refunds"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def wait_until_up(url: str, process: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"{process.args!r} exited with {process.returncode}"
        try:
            with urllib.request.urlopen(url, timeout=1) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"{url} did not answer within {timeout:.0f}s")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


@dataclass(frozen=True)
class Stack:
    env: dict[str, str]  # no AGENTSUDO_* but the key directory
    jwks: str  # the JWKS URL the service and the agent verify with
    billing: str

    def cli(self, *args: str) -> str:
        done = subprocess.run(
            [str(AGENTSUDO), *args], env=self.env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    def mint(self, *aud: str, scopes: str = SCOPES) -> str:
        audiences = [arg for a in aud for arg in ("--aud", a)]
        return self.cli("issue", "--agent", "SupportBot", "--scopes", scopes, *audiences).strip()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Keys made by the CLI and served by it over HTTP; the billing service under uvicorn."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTSUDO_")}
    env["AGENTSUDO_KEYS_DIR"] = str(tmp_path_factory.mktemp("services") / "keys")
    jwks_port, billing_port = free_port(), free_port()
    jwks = f"http://{HOST}:{jwks_port}/.well-known/jwks.json"
    billing = f"http://{HOST}:{billing_port}"
    processes: list[subprocess.Popen[bytes]] = []
    try:
        Stack(env, jwks, billing).cli("keys", "init")
        serve_keys = [str(AGENTSUDO), "keys", "serve", "--port", str(jwks_port)]
        processes.append(subprocess.Popen(serve_keys, env=env, stderr=subprocess.DEVNULL))
        wait_until_up(jwks, processes[-1])
        service_env = dict(env, AGENTSUDO_JWKS=jwks, AGENTSUDO_AUDIENCE="billing")
        uvicorn = [sys.executable, "-m", "uvicorn", "billing_service:app", "--app-dir"]
        uvicorn += [str(SERVICES), "--host", HOST, "--port", str(billing_port), "--no-access-log"]
        processes.append(subprocess.Popen(uvicorn, env=service_env, stderr=subprocess.DEVNULL))
        wait_until_up(f"{billing}/healthz", processes[-1])
        yield Stack(env, jwks, billing)
    finally:
        for process in reversed(processes):
            stop(process)


def test_the_agent_process_calls_the_service_with_its_token(stack: Stack) -> None:
    token = stack.mint("agentsudo", "billing")  # its own guard's audience, and the service's
    done = subprocess.run(
        [sys.executable, str(SERVICES / "agent.py"), stack.billing],
        env=dict(stack.env, AGENTSUDO_TOKEN=token, AGENTSUDO_JWKS=stack.jwks),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = {line.split("->")[0].strip(): line for line in done.stdout.splitlines()}
    assert "-> 200" in lines["GET /orders/1"] and "SupportBot" in lines["GET /orders/1"]
    assert "-> 200" in lines["refund order_123 $50"]
    assert "'receipt': 'rf_order_123_50'" in lines["refund order_123 $50"]
    assert "blocked here" in lines["delete cust_456 (local @sudo)"]
    assert "-> 403" in lines["delete cust_456 (guard skipped)"]
    assert "-> 401" in lines["delete cust_456 (token edited +scope)"]
    assert token not in done.stdout + done.stderr


@pytest.fixture
def billing(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.billing, timeout=10) as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_an_allowed_refund_succeeds(stack: Stack, billing: httpx.Client) -> None:
    token = stack.mint("billing")
    response = billing.post(
        "/refunds", json={"order_id": "o9", "amount": 20}, headers=bearer(token)
    )
    assert response.status_code == 200
    assert response.json() == {
        "refunded": 20,
        "order_id": "o9",
        "receipt": "rf_o9_20",
        "by": "SupportBot",
    }


def test_a_forbidden_delete_is_403(stack: Stack, billing: httpx.Client) -> None:
    response = billing.delete("/customers/c1", headers=bearer(stack.mint("billing")))
    assert response.status_code == 403
    assert response.headers["www-authenticate"].startswith('Bearer error="insufficient_scope"')
    assert response.headers["www-authenticate"].endswith('scope="delete:customers"')
    assert "write:refunds" not in response.text  # what the caller holds is never listed


def test_a_tampered_token_is_401(stack: Stack, billing: httpx.Client) -> None:
    header, payload, signature = stack.mint("billing").split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["scope"] = "read:orders write:refunds delete:customers"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    response = billing.delete("/customers/c1", headers=bearer(f"{header}.{forged}.{signature}"))
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == (
        'Bearer error="invalid_token", error_description="the signature does not verify"'
    )


def test_no_token_or_another_services_token_is_401(stack: Stack, billing: httpx.Client) -> None:
    assert billing.get("/healthz").status_code == 200  # public
    missing = billing.get("/orders/o1")
    assert missing.status_code == 401
    assert 'error="invalid_token"' in missing.headers["www-authenticate"]
    elsewhere = billing.get("/orders/o1", headers=bearer(stack.mint("reporting")))
    assert elsewhere.status_code == 401
    assert "not meant for this service" in elsewhere.headers["www-authenticate"]


def test_the_demo_script_runs_end_to_end() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTSUDO_")}
    done = subprocess.run(
        [sys.executable, str(SERVICES / "run_demo.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "all outcomes as expected" in done.stdout
    assert "Traceback" not in done.stderr
