"""Elevation with a token bound to a key: the broker wants a proof of the key, as a service does.

The broker and the waiting agent are real processes (``test_broker_elevation``'s
harness); the agent is started by ``agentsudo run --dpop``, so its token is
bound to a key only it holds. A copy of the token files nothing and reads nothing.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from installed_cli import AGENTSUDO
from test_broker_elevation import AGENT, WAIT, Broker, finished, home, stop

from agentsudo_tokens.broker.client import BrokerClient
from agentsudo_tokens.errors import InvalidTokenError
from agentsudo_tokens.tokens.dpop import DPoPKey


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    running = Broker(tmp_path)
    yield running
    running.stop()


def test_a_bound_agent_asks_with_proofs_and_its_call_runs_once(broker: Broker) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTSUDO_")}
    env["AGENTSUDO_BROKER"] = broker.address
    agent = subprocess.Popen(
        [AGENTSUDO, "run", "--dpop", "--agent", "SupportBot", "--",
         sys.executable, "-c", AGENT, "c-7", str(WAIT)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        cwd=home(broker.root),
    )  # fmt: skip
    try:
        shown = broker.waiting()
        assert shown["arguments"] == {"customer_id": "c-7", "hard": False}
        broker.answer(shown["id"], "approve")
        done = finished(agent)
    finally:
        stop(agent)
    assert done == {"result": "deleted c-7", "runs": ["c-7"]}


def test_a_copied_bound_token_cannot_ask_or_read(broker: Broker) -> None:
    key = DPoPKey.generate()
    token = broker.client.issue("SupportBot", scopes=["read:orders"], dpop_key=key)["token"]
    body = {
        "token": token,
        "scope": "delete:customer",
        "function": "delete_customer",
        "arguments": '{"customer_id":"c-1"}',
    }
    with pytest.raises(InvalidTokenError, match="exactly one DPoP header, found 0"):
        broker.client.request("POST", "/v1/elevations", body)
    thief = DPoPKey.generate().proof("POST", broker.client.url_of("/v1/elevations"), token=token)
    with pytest.raises(InvalidTokenError, match="another key"):
        broker.client.request("POST", "/v1/elevations", body, headers={"DPoP": thief})
    assert not broker.admin.request("GET", "/v1/approvals")["approvals"]  # nothing was filed

    proof = key.proof("POST", broker.client.url_of("/v1/elevations"), token=token)
    filed = broker.client.request("POST", "/v1/elevations", body, headers={"DPoP": proof})
    path = f"/v1/elevations/{filed['id']}"
    with pytest.raises(InvalidTokenError, match="bound to a key"):
        BrokerClient(broker.address, credential=token).request("GET", path)
    with pytest.raises(InvalidTokenError, match="exactly one DPoP header"):
        broker.client.request("GET", path, headers={"Authorization": f"DPoP {token}"})
    status = key.proof("GET", broker.client.url_of(path), token=token)
    headers = {"Authorization": f"DPoP {token}", "DPoP": status}
    assert broker.client.request("GET", path, headers=headers)["status"] == "pending"
