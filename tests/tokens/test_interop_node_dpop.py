"""DPoP interop with Node's ``jose``, both ways, in real processes over real sockets.

* A Node service (``tests/node/dpop_service.mjs``) verifies our bound tokens and the
  proofs ``AgentTokenAuth`` signs, and refuses the token alone, a replay, another key.
* A Node client (``tests/node/dpop_client.mjs``) signs proofs with jose for a token we
  bound to its key; our FastAPI service (uvicorn) accepts them, once.

Needs ``node`` and the pinned ``jose`` (``npm ci --prefix tests/node``); skipped otherwise.
"""

# No ``from __future__ import annotations``: FastAPI must see the closures' annotations.
import json
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import httpx
import pytest
import uvicorn
from fastapi import Depends, FastAPI

from agentsudo_tokens import Agent, Issuer, KeyDirectory, Verifier
from agentsudo_tokens.integrations.fastapi import require_scope
from agentsudo_tokens.integrations.httpx import AgentTokenAuth
from agentsudo_tokens.tokens.dpop import DPoPKey

NODE_DIR = Path(__file__).resolve().parents[1] / "node"
NODE = shutil.which("node")
AUDIENCE = "node-orders"

pytestmark = [
    pytest.mark.skipif(NODE is None, reason="node is not installed"),
    pytest.mark.skipif(
        not (NODE_DIR / "node_modules" / "jose" / "package.json").is_file(),
        reason="jose is not installed; run: npm ci --prefix tests/node",
    ),
]


@pytest.fixture(params=["EdDSA", "ES256"], scope="module")
def keydir(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> KeyDirectory:
    return KeyDirectory.init(tmp_path_factory.mktemp("node-dpop") / "keys", alg=request.param)


@pytest.fixture(scope="module")
def node_service(keydir: KeyDirectory) -> Iterator[str]:
    assert NODE is not None
    process = subprocess.Popen(
        [NODE, str(NODE_DIR / "dpop_service.mjs"), str(keydir.jwks_path), "agentsudo", AUDIENCE],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        problem = process.stderr.read() if process.stderr and not line else ""
        assert line.startswith("listening "), line + problem
        yield f"http://127.0.0.1:{line.split()[1]}"
    finally:
        process.terminate()
        process.wait(10)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture(params=["EdDSA", "ES256"])
def dpop_key(request: pytest.FixtureRequest) -> DPoPKey:
    return DPoPKey.generate(request.param)


def _bound(keydir: KeyDirectory, key: DPoPKey) -> str:
    issuer = Issuer(keydir.signing_key(), audience=AUDIENCE)
    return issuer.issue("SupportBot", ["read:orders"], jkt=key.jkt).token


def _challenge(answer: httpx.Response) -> str:
    return answer.headers.get("www-authenticate", "")


def test_jose_verifies_our_bound_token_and_each_proof(
    node_service: str, keydir: KeyDirectory, dpop_key: DPoPKey
) -> None:
    token = _bound(keydir, dpop_key)
    verifier = Verifier(keydir.public_keys(), audience=AUDIENCE)
    with (
        Agent.from_token(token, verifier=verifier).start_session(),
        httpx.Client(base_url=node_service, auth=AgentTokenAuth(dpop_key=dpop_key)) as client,
    ):
        for path in ("/orders/1", "/orders/2?expand=items"):
            answer = client.get(path)
            assert answer.status_code == 200, _challenge(answer)
            expected = {"sub": "SupportBot", "scope": "read:orders", "jkt": dpop_key.jkt}
            assert answer.json() == expected
        assert client.post("/refunds").status_code == 200


def test_jose_refuses_the_token_without_its_key(
    node_service: str, keydir: KeyDirectory, dpop_key: DPoPKey
) -> None:
    token = _bound(keydir, dpop_key)
    url = f"{node_service}/orders/1"
    with httpx.Client() as thief:
        bearer = thief.get(url, headers={"Authorization": f"Bearer {token}"})
        assert bearer.status_code == 401 and 'error="invalid_token"' in _challenge(bearer)
        alone = thief.get(url, headers={"Authorization": f"DPoP {token}"})
        assert alone.status_code == 401 and "expected one DPoP header" in _challenge(alone)
        proof = dpop_key.proof("GET", url, token=token)
        good = {"Authorization": f"DPoP {token}", "DPoP": proof}
        assert thief.get(url, headers=good).status_code == 200
        replayed = thief.get(url, headers=good)
        assert replayed.status_code == 401 and "replayed" in _challenge(replayed)
        other = DPoPKey.generate().proof("GET", url, token=token)
        stolen = thief.get(url, headers={"Authorization": f"DPoP {token}", "DPoP": other})
        assert stolen.status_code == 401 and "not the token's" in _challenge(stolen)
        elsewhere = dpop_key.proof("GET", f"{node_service}/orders/2", token=token)
        moved = thief.get(url, headers={"Authorization": f"DPoP {token}", "DPoP": elsewhere})
        assert moved.status_code == 401 and "htu" in _challenge(moved)
        posted = dpop_key.proof("POST", url, token=token)
        method = thief.get(url, headers={"Authorization": f"DPoP {token}", "DPoP": posted})
        assert method.status_code == 401 and "htm" in _challenge(method)


# -- the other way: jose signs, we verify ----------------------------------------------------


@pytest.fixture(scope="module")
def python_service(keydir: KeyDirectory) -> Iterator[str]:
    verifier = Verifier(keydir.public_keys(), audience=AUDIENCE)
    app = FastAPI()

    reads = require_scope("read:orders", verifier=verifier)

    @app.get("/orders/{order_id}")
    def order(order_id: str, agent: Annotated[Agent, Depends(reads)]) -> dict[str, Any]:
        jkt = agent.claims.jkt if agent.claims else None
        return {"order": order_id, "by": agent.name, "jkt": jkt}

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the service did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def _jose_client(method: str, url: str, token: str, key: DPoPKey) -> dict[str, Any]:
    assert NODE is not None
    handed = json.dumps({"token": token, "jwk": key.to_private_jwk(), "alg": key.alg})
    done = subprocess.run(
        [NODE, str(NODE_DIR / "dpop_client.mjs"), method, url],
        input=handed,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_we_verify_proofs_jose_signs(
    python_service: str, keydir: KeyDirectory, dpop_key: DPoPKey
) -> None:
    token = _bound(keydir, dpop_key)
    url = f"{python_service}/orders/o-7?expand=items"
    sent = _jose_client("GET", url, token, dpop_key)
    assert sent["status"] == 200, sent["body"]
    assert json.loads(sent["body"]) == {"order": "o-7", "by": "SupportBot", "jkt": dpop_key.jkt}
    headers = {"Authorization": f"DPoP {token}", "DPoP": sent["proof"]}
    replayed = httpx.get(url, headers=headers)
    assert replayed.status_code == 401 and "used before" in _challenge(replayed)
    thief = _jose_client("GET", url, token, DPoPKey.generate(dpop_key.alg))
    assert thief["status"] == 401
