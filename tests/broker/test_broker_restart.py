"""A pending elevation survives a broker restart: the request is in the store, not the process."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from test_broker_elevation import AGENT, POLICY, WAIT, Broker, finished, stop

from agentsudo_tokens.broker.client import BrokerClient
from agentsudo_tokens.tokens.issuer import Issuer
from agentsudo_tokens.tokens.keydir import KeyDirectory

pytest.importorskip("uvicorn")
assert AGENT and POLICY  # the agent and the policy of the elevation tests


def _restarted(broker: Broker) -> tuple[subprocess.Popen[str], BrokerClient]:
    """The same broker (keys, policy, store, socket) started again; its admin client."""
    process = subprocess.Popen(
        [broker.process.args[0], "serve", "--policy", str(broker.root / "agentsudo.toml"),
         "--keys-dir", str(broker.keys), "--socket", str(broker.socket),
         "--listen", "127.0.0.1:0"],
        stderr=subprocess.PIPE, text=True, cwd=broker.root,
    )  # fmt: skip
    assert process.stderr is not None
    lines = [process.stderr.readline() for _ in range(2)]
    assert all("listening on" in line for line in lines), lines
    tcp = next(line.rsplit(" ", 1)[1].strip() for line in lines if "http://" in line)
    key = KeyDirectory(broker.keys).signing_key()
    credential = Issuer(key).issue("admin", ["broker:admin"], audience="agentsudo-broker")
    return process, BrokerClient(tcp, credential=credential.token)


def test_a_waiting_call_is_answered_after_the_broker_restarts(tmp_path: Path) -> None:
    broker = Broker(tmp_path)
    agent = broker.agent(broker.token())
    second = None
    try:
        filed = broker.waiting()
        broker.stop()  # SIGTERM: gone, while the agent waits and polls
        second, admin = _restarted(broker)
        still = admin.request("GET", f"/v1/approvals/{filed['id']}")
        assert still["id"] == filed["id"] and still["arguments"] == filed["arguments"]
        admin.request("POST", f"/v1/approvals/{filed['id']}/approve", {})
        answer = finished(agent)
        assert answer == {"result": "deleted c-42", "runs": ["c-42"]}, answer
    finally:
        stop(agent)
        if second is not None:
            second.terminate()
            second.wait(timeout=WAIT)
            assert second.stderr is not None
            second.stderr.close()
