"""Token exchange under attack (the delegation attack round), at a real broker.

Over TCP the exchange endpoint used to rate-limit only after the subject token
verified, so garbage was never limited and each refusal wrote a whole audit line
with everything asked (57 KB bodies: megabytes of audit a second from one
client). Now every TCP request takes from its address's bucket before anything
is read or verified; a refusal before the token verifies is audited quietly, by
address; what a refusal keeps of the request is clipped; a TCP refusal names its
address; and past verification the bucket is the address's and the root agent's,
so a sub-agent elsewhere cannot lock its root out. An ``actor`` may not name
another agent of the policy.
"""

from __future__ import annotations

import http.client
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import broker_harness
import pytest

from agentsudo_tokens.errors import DelegationRefusedError
from agentsudo_tokens.tokens.delegation import GRANT_TYPE

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
audiences = ["agentsudo", "billing"]

[agents.SupportBot]
scopes = ["read:orders"]
ask = ["delete:customer"]
callers = ["uid:{ME}"]
"""
ACCESS = "urn:ietf:params:oauth:token-type:access_token"
BURST = 5
HANDFUL = 3  # audit lines a flood may add while the broker runs


class TcpBroker(broker_harness.Broker):
    """The harness on the socket and on an ephemeral loopback port."""

    def __init__(self, root: Path, *extra: str) -> None:
        broker_harness.init_keys(root)
        super().__init__(root, POLICY, "--listen", "127.0.0.1:0", *extra)
        assert self.process.stderr is not None
        line = self.process.stderr.readline()
        assert "listening on http://" in line, line
        self.port = int(line.strip().rpartition(":")[2])
        self.log = root / "keys" / "broker-audit.jsonl"

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def exchange(self, form: dict[str, Any] | bytes, source: str = "127.0.0.1") -> tuple[int, Any]:
        """One form post to the exchange endpoint over TCP from ``source``."""
        body = form if isinstance(form, bytes) else urlencode(form, doseq=True).encode()
        connection = http.client.HTTPConnection(
            "127.0.0.1", self.port, timeout=30, source_address=(source, 0)
        )
        try:
            connection.request(
                "POST",
                "/v1/oauth/token",
                body=body,
                headers={"content-type": "application/x-www-form-urlencoded"},
            )
            answer = connection.getresponse()
            return answer.status, json.loads(answer.read())
        finally:
            connection.close()

    def root_token(self) -> str:
        return str(self.client.issue("Orchestrator", scopes=["read:*"], ttl=600)["token"])


@pytest.fixture
def default(tmp_path: Path) -> Iterator[TcpBroker]:
    running = TcpBroker(tmp_path / "b")
    yield running
    running.stop()


@pytest.fixture
def limited(tmp_path: Path) -> Iterator[TcpBroker]:
    running = TcpBroker(tmp_path / "b", "--issue-burst", str(BURST), "--issue-rate", "0.01")
    yield running
    running.stop()


def _form(token: str, **more: Any) -> dict[str, Any]:
    return {"grant_type": GRANT_TYPE, "subject_token": token, "subject_token_type": ACCESS, **more}


def test_garbage_over_tcp_is_limited_by_address_and_audited_quietly(limited: TcpBroker) -> None:
    """The attack: 57 KB bodies, a garbage token, huge audiences: 17 MB of audit in 0.4 s."""
    assert limited.client.health() == {"status": "ok"}
    before_lines, before_bytes = len(limited.events()), limited.log.stat().st_size
    huge = (
        f"grant_type={GRANT_TYPE}&subject_token=x.y.z&subject_token_type={ACCESS}"
        + "".join("&audience=" + "a" * 8100 for _ in range(7))
    ).encode()
    assert len(huge) > 56_000
    statuses = [limited.exchange(huge)[0] for _ in range(200)]
    assert statuses[:BURST] == [400] * BURST  # refused for what they are, then limited
    assert set(statuses[BURST:]) == {429}
    assert len(limited.events()) - before_lines <= HANDFUL
    assert limited.log.stat().st_size - before_bytes < 4096
    status, body = limited.exchange(_form(limited.root_token()), source="127.0.0.2")
    assert status == 200, body  # another address is served
    assert limited.stop() == 0
    refused = [e for e in limited.events() if e["outcome"] == "broker_refused"]
    assert {e["address"] for e in refused} == {"ip:127.0.0.1"}
    assert all("caller" not in e and len(json.dumps(e)) < 1024 for e in refused)
    whole = [e for e in refused if "refusals" not in e]
    assert len(whole) + sum(e.get("refusals", 0) for e in refused) == 200  # none lost


def test_a_verified_refusal_over_tcp_names_its_address_and_keeps_little(
    limited: TcpBroker,
) -> None:
    parent = limited.root_token()
    scopes = " ".join(f"read:{n:02d}" + "x" * 190 for n in range(40))
    form = _form(parent, scope=scopes, audience=["p" * 250 + str(n) for n in range(30)])
    status, body = limited.exchange(form)
    assert status == 400 and body["reason"] == "audience", body
    event = limited.events()[-1]
    assert event["outcome"] == "broker_refused" and event["action"] == "exchange"
    assert event["address"] == "ip:127.0.0.1" and event["chain"] == ["Orchestrator"]
    assert len(json.dumps(event)) < 4096  # the request was ~16 KB
    assert len(event["asked"]["scopes"]) <= 9 and len(event["asked"]["audience"]) <= 9


def test_a_sub_agent_elsewhere_cannot_lock_its_root_out(limited: TcpBroker) -> None:
    parent = limited.root_token()
    child = limited.client.exchange(parent, actor="Compromised", scopes=["read:orders"])
    flood = [limited.exchange(_form(child["access_token"]), "127.0.0.2")[0] for _ in range(12)]
    assert flood[-1] == 429 and flood.count(200) <= BURST
    status, body = limited.exchange(_form(parent, scope="read:orders"), "127.0.0.1")
    assert status == 200, body  # the root, from its own address, is still served


def test_an_actor_may_not_name_another_agent_of_the_policy(default: TcpBroker) -> None:
    limited = default
    parent = limited.root_token()
    for actor in ("SupportBot", "supportbot", "orchestrator"):
        with pytest.raises(DelegationRefusedError) as refused:
            limited.client.exchange(parent, actor=actor, scopes=["read:orders"])
        assert refused.value.reason == "actor" and "\n" not in str(refused.value)
    own = limited.client.exchange(parent, actor="Orchestrator", scopes=["read:*"])  # itself
    child = limited.client.exchange(parent, actor="Summarizer", scopes=["read:*"])
    with pytest.raises(DelegationRefusedError, match="SupportBot"):
        limited.client.exchange(child["access_token"], actor="SupportBot")
    with pytest.raises(DelegationRefusedError) as refused:  # the root's name, from a child
        limited.client.exchange(child["access_token"], actor="Orchestrator")
    assert refused.value.reason == "actor"
    assert limited.client.exchange(own["access_token"], scopes=["read:orders"])  # its own name
    event = [e for e in limited.events() if e["outcome"] == "broker_refused"][-1]
    assert event["action"] == "exchange" and event["asked"] == {"actor": "Orchestrator"}
