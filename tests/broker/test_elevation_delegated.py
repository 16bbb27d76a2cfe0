"""Elevation requests of delegated tokens (the delegation attack round), at a real broker.

A child holding only ``read:orders`` filed an elevation for ``delete:customer``
(its root's ``ask`` scope) and had it approved: delegation did not narrow what a
sub-agent may ask a human for. A child named like another agent of the policy
had its requests counted under that agent, filling its 100 waiting requests,
and ``agentsudo approvals`` showed that agent with no chain. Now a delegated
token asks a human only for what its root may pass on (``delegable``: under a
policy that is never an ``ask`` scope, so it does not ask at all); requests are
counted by chain, and a root's sub-agents together; the chain is stored with the
request and shown by ``approvals``, ``approvals show`` and ``GET /v1/approvals``.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import broker_harness
import pytest
from installed_cli import AGENTSUDO, sh
from test_broker_server import raw

from agentsudo_tokens.broker.client import BrokerClient
from agentsudo_tokens.broker.elevation import MAX_PENDING
from agentsudo_tokens.state import open_store
from agentsudo_tokens.state.approvals import (
    REQUEST,
    ApprovalRequest,
    binding,
    canonical_arguments,
    text_digest,
)

pytest.importorskip("uvicorn")

ME = os.getuid()
POLICY = f"""
[broker]
admins = ["uid:{ME}"]

[agents.Orchestrator]
scopes = ["read:*", "write:refunds"]
ask = ["delete:customer"]
delegable = ["read:*"]
max_depth = 2
max_ttl = "1h"
callers = ["uid:{ME}"]
"""


class DevBroker:
    """``agentsudo serve --dev`` on a socket: any agent, any scope, for this user."""

    def __init__(self, root: Path) -> None:
        self.root, self.keys = root, broker_harness.init_keys(root)
        self.socket = root / "broker.sock"
        self.address = f"unix://{self.socket}"
        self.log = root / "broker.log"
        with self.log.open("w") as log:
            self.process = subprocess.Popen(
                [AGENTSUDO, "serve", "--dev", "--keys-dir", str(self.keys),
                 "--socket", str(self.socket)],
                stderr=log, cwd=root,
            )  # fmt: skip
        deadline = time.monotonic() + 30
        while "listening on" not in self.log.read_text():
            assert self.process.poll() is None and time.monotonic() < deadline, self.log.read_text()
            time.sleep(0.05)
        self.client = BrokerClient(self.address)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        assert self.process.wait(timeout=30) == 0


@pytest.fixture
def dev(tmp_path: Path) -> Iterator[DevBroker]:
    running = DevBroker(tmp_path / "dev")
    yield running
    running.stop()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[broker_harness.Broker]:
    broker_harness.init_keys(tmp_path / "b")
    running = broker_harness.Broker(tmp_path / "b", POLICY)
    yield running
    running.stop()


def _ask(socket: Path, token: str, customer: str = "c-42") -> tuple[int, dict[str, Any]]:
    """``POST /v1/elevations`` on the socket: the status and the answer."""
    body = json.dumps(
        {
            "token": token,
            "scope": "delete:customer",
            "function": "app.delete_customer",
            "arguments": canonical_arguments({"customer_id": customer}),
        }
    ).encode()
    request = (
        f"POST /v1/elevations HTTP/1.1\r\nHost: broker\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body
    status, _, answer = raw(socket, request)
    return status, json.loads(answer)


def _issue(client: BrokerClient, agent: str, scopes: list[str]) -> str:
    return str(client.issue(agent, scopes=scopes, ttl=600)["token"])


def test_a_delegated_token_asks_a_human_for_nothing_its_root_could_not_pass_on(
    broker: broker_harness.Broker,
) -> None:
    root = _issue(broker.client, "Orchestrator", ["read:*"])
    child = broker.client.exchange(root, actor="Summarizer", scopes=["read:orders"])
    status, body = _ask(broker.socket, child["access_token"])
    assert status == 403, body
    assert "delegated" in body["detail"] and "Orchestrator > Summarizer" in body["detail"]
    assert "\n" not in body["detail"]
    assert broker.client.approvals() == []  # nothing for a human to approve by mistake
    audit = broker.root / "keys" / "broker-audit.jsonl"
    event = [json.loads(line) for line in audit.read_text().splitlines()][-1]
    assert event["outcome"] == "broker_refused" and event["action"] == "elevation"
    copy = broker.client.exchange(root, scopes=["read:*"])  # a narrowed copy of itself
    assert _ask(broker.socket, copy["access_token"])[0] == 403
    assert _ask(broker.socket, root)[0] == 202  # the root agent's own token still asks


def test_in_dev_mode_a_sub_agent_asks_and_its_chain_is_shown(dev: DevBroker) -> None:
    root = _issue(dev.client, "Orchestrator", ["read:*"])
    child = dev.client.exchange(root, actor="Summarizer", scopes=["read:orders"])
    status, filed = _ask(dev.socket, child["access_token"])
    assert status == 202, filed
    listed = dev.client.request("GET", "/v1/approvals")["approvals"]
    assert [(item["agent"], item["chain"]) for item in listed] == [
        ("Summarizer", ["Orchestrator", "Summarizer"])
    ]
    assert dev.client.approval(filed["id"]).chain == ("Orchestrator", "Summarizer")
    env = {**os.environ, "AGENTSUDO_BROKER": dev.address}
    rows = sh("approvals", cwd=dev.root, env=env)
    assert rows.returncode == 0 and "Orchestrator>Summarizer" in rows.stdout, rows.stderr
    shown = sh("approvals", "show", filed["id"], cwd=dev.root, env=env)
    assert "chain      Orchestrator > Summarizer" in shown.stdout, shown.stderr
    old = _old_request(dev)  # filed before chains were kept: still listed, shown, answered
    listed = dev.client.request("GET", "/v1/approvals")["approvals"]
    assert [item["chain"] for item in listed] == [["Orchestrator", "Summarizer"], []]
    assert old in sh("approvals", cwd=dev.root, env=env).stdout
    shown = sh("approvals", "show", old, cwd=dev.root, env=env)
    assert shown.returncode == 0 and "chain" not in shown.stdout
    assert dev.client.approve(old).agent == "SupportBot"


def _old_request(dev: DevBroker) -> str:
    """A request as the broker stored it before it kept chains; its id."""
    arguments = canonical_arguments({"customer_id": "c-7"})
    digest, now = text_digest(arguments), time.time()
    request_id = "apr_" + "o" * 22
    request = ApprovalRequest(
        id=request_id, agent="SupportBot", jti="j-old", scope="delete:customer",
        function="app.delete_customer", arguments_json=arguments, arguments_sha256=digest,
        reason="not granted", created_at=now, expires_at=now + 300,
        binding=binding(request_id, "SupportBot", "j-old", "delete:customer",
                        "app.delete_customer", digest),
    )  # fmt: skip
    stored = request.to_dict()
    stored.pop("chain", None)
    store = open_store(f"sqlite:///{dev.keys / 'agentsudo-state.db'}")
    try:
        store.put(REQUEST + request_id, json.dumps(stored), expires_at=now + 600)
    finally:
        store.close()
    return request_id


def test_a_sub_agent_named_like_another_agent_does_not_use_up_its_requests(
    dev: DevBroker,
) -> None:
    orchestrator = _issue(dev.client, "Orchestrator", ["read:*"])
    posing = dev.client.exchange(orchestrator, actor="SupportBot", scopes=["read:orders"])
    for n in range(MAX_PENDING):
        assert _ask(dev.socket, posing["access_token"], f"c-{n}")[0] == 202
    status, body = _ask(dev.socket, posing["access_token"], "one-more")
    assert status == 429, body
    real = _issue(dev.client, "SupportBot", ["read:orders"])
    assert _ask(dev.socket, real)[0] == 202  # counted apart from the one posing as it
    sibling = dev.client.exchange(orchestrator, actor="Helper", scopes=["read:orders"])
    status, body = _ask(dev.socket, sibling["access_token"])
    assert status == 429 and "'Orchestrator'" in body["detail"]  # its sub-agents, together
    assert _ask(dev.socket, orchestrator)[0] == 202  # the root is never locked out by them


def test_over_tcp_a_sub_agent_elsewhere_cannot_use_up_its_roots_filing(tmp_path: Path) -> None:
    broker_harness.init_keys(tmp_path / "t")
    running = broker_harness.Broker(
        tmp_path / "t", POLICY, "--listen", "127.0.0.1:0", "--issue-burst", "3",
        "--issue-rate", "0.01",
    )  # fmt: skip
    try:
        assert running.process.stderr is not None
        port = int(running.process.stderr.readline().strip().rpartition(":")[2])
        root = _issue(running.client, "Orchestrator", ["read:*"])
        child = running.client.exchange(root, actor="Compromised", scopes=["read:orders"])
        flood = [_ask_tcp(port, child["access_token"], "127.0.0.2") for _ in range(6)]
        assert flood[-1] == 429 and set(flood) == {403, 429}
        assert _ask_tcp(port, root, "127.0.0.1") == 202  # its root, from its own address
    finally:
        running.stop()


def _ask_tcp(port: int, token: str, source: str) -> int:
    body = {
        "token": token,
        "scope": "delete:customer",
        "function": "app.delete_customer",
        "arguments": canonical_arguments({"customer_id": "c-42"}),
    }
    connection = http.client.HTTPConnection(
        "127.0.0.1", port, timeout=30, source_address=(source, 0)
    )
    try:
        connection.request(
            "POST", "/v1/elevations", body=json.dumps(body).encode(),
            headers={"content-type": "application/json"},
        )  # fmt: skip
        answer = connection.getresponse()
        answer.read()
        return answer.status
    finally:
        connection.close()


def test_a_stored_chain_is_checked_like_the_rest_of_a_request() -> None:
    arguments = canonical_arguments({"customer_id": "c-1"})
    digest, chain = text_digest(arguments), ("Orchestrator", "Summarizer")
    request = ApprovalRequest(
        id="apr_" + "c" * 22, agent="Summarizer", jti="j", scope="delete:customer",
        function="f", arguments_json=arguments, arguments_sha256=digest, reason="r",
        created_at=1.0, expires_at=2.0,
        binding=binding("apr_" + "c" * 22, "Summarizer", "j", "delete:customer", "f", digest,
                        chain),
        chain=chain,
    )  # fmt: skip
    stored = request.to_dict()
    assert ApprovalRequest.from_json(json.dumps(stored)) == request
    assert "(chain Orchestrator > Summarizer)" in request.describe()
    for altered in (["Other", "Summarizer"], ["Orchestrator", "Helper"], "Orchestrator", [1]):
        with pytest.raises(ValueError):
            ApprovalRequest.from_json(json.dumps(dict(stored, chain=altered)))
    unbound = dict(stored, chain=[], binding=binding(request.id, "Summarizer", "j",
                                                     "delete:customer", "f", digest))  # fmt: skip
    assert ApprovalRequest.from_json(json.dumps(unbound)).chain == ()  # as stored before
