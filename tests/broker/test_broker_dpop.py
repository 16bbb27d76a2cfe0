"""The broker binds a token to the caller's key when the token request carries a DPoP proof.

A real ``agentsudo serve`` on a Unix socket (``broker_harness``); requests from
``BrokerClient``, proofs from ``DPoPKey`` or forged.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from broker_harness import Broker, init_keys
from installed_cli import sh

from agentsudo_tokens import Issuer, JwksFile, KeyDirectory, Verifier
from agentsudo_tokens.broker.client import BrokerClient
from agentsudo_tokens.errors import ConfigError, InvalidTokenError
from agentsudo_tokens.tokens.dpop import DPoPKey

ME = os.geteuid()
POLICY = f"""
[broker]
admins = ["uid:{ME}"]

[agents.SupportBot]
scopes = ["read:orders", "write:refunds"]
callers = ["uid:{ME}"]
"""
TOKENS = "http://localhost/v1/tokens"  # the token endpoint's URL on the Unix socket


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    init_keys(tmp_path)
    running = Broker(tmp_path, POLICY)
    yield running
    running.stop()


def verified(broker: Broker, token: str) -> object:
    return Verifier(JwksFile(broker.root / "keys" / "jwks.json")).verify(token)


@pytest.mark.parametrize("alg", ["EdDSA", "ES256"])
def test_a_proof_with_the_request_binds_the_token_to_its_key(broker: Broker, alg: str) -> None:
    key = DPoPKey.generate(alg)
    answer = broker.client.issue("SupportBot", scopes=["read:orders"], dpop_key=key)
    assert answer["token_type"] == "DPoP"
    claims = verified(broker, answer["token"])
    assert claims.jkt == key.jkt  # type: ignore[attr-defined]
    plain = broker.client.issue("SupportBot", scopes=["read:orders"])
    assert plain["token_type"] == "Bearer"
    assert verified(broker, plain["token"]).jkt is None  # type: ignore[attr-defined]
    broker.stop()
    issued = [
        json.loads(line)
        for line in (broker.root / "keys" / "broker-audit.jsonl").read_text().splitlines()
        if '"outcome":"issued"' in line
    ]
    assert [event.get("jkt") for event in issued] == [key.jkt, None]


@pytest.mark.parametrize(
    ("proof", "reason"),
    [
        (lambda key: key.proof("GET", TOKENS), "made for method 'GET'"),
        (lambda key: key.proof("POST", "http://localhost/v1/revocations"), "made for URL"),
        (lambda key: key.proof("POST", TOKENS, now=1_000_000), "old"),
        (lambda key: key.proof("POST", TOKENS)[:-4] + "AAAA", "signature does not verify"),
        (lambda key: "not-a-proof", "3 non-empty parts"),
    ],
    ids=["wrong-method", "wrong-url", "stale", "bad-signature", "garbage"],
)
def test_a_bad_proof_is_refused_and_no_token_is_minted(
    broker: Broker, proof: object, reason: str
) -> None:
    key = DPoPKey.generate()
    headers = {"DPoP": proof(key)}  # type: ignore[operator]
    with pytest.raises(ConfigError, match="DPoP proof: ") as caught:
        broker.client.request("POST", "/v1/tokens", {"agent": "SupportBot"}, headers=headers)
    assert reason in str(caught.value) and "\n" not in str(caught.value)


def test_a_proof_is_good_for_one_token_request(broker: Broker) -> None:
    headers = {"DPoP": DPoPKey.generate().proof("POST", TOKENS)}
    body = {"agent": "SupportBot", "scopes": ["read:orders"]}
    assert broker.client.request("POST", "/v1/tokens", body, headers=headers)["token"]
    with pytest.raises(ConfigError, match="used before"):
        broker.client.request("POST", "/v1/tokens", body, headers=headers)


def test_run_dpop_through_the_broker(broker: Broker, tmp_path: Path) -> None:
    code = (
        "from agentsudo_tokens import current_agent\n"
        "from agentsudo_tokens.guard.possession import process_key\n"
        "agent, key = current_agent(), process_key()\n"
        "print(agent.name, agent.claims.jkt == key.jkt, key.alg)\n"
    )
    env = {**os.environ, "AGENTSUDO_BROKER": broker.address}
    argv = ["run", "--dpop-alg", "ES256", "--agent", "SupportBot", "--scopes", "read:orders", "--"]
    done = sh(*argv, sys.executable, "-c", code, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["SupportBot", "True", "ES256"]
    jkt = DPoPKey.generate().jkt
    refused = sh("issue", "--agent", "SupportBot", "--dpop-jkt", jkt, cwd=tmp_path, env=env)
    assert refused.returncode == 2 and "DPoP proof" in refused.stderr


def test_over_tcp_a_credential_bound_to_a_key_is_not_a_bearer_credential(tmp_path: Path) -> None:
    keys = init_keys(tmp_path)
    policy = POLICY.replace(f'admins = ["uid:{ME}"]', 'admins = ["credential:admin"]')
    running = Broker(tmp_path, policy, "--listen", "127.0.0.1:0")
    try:
        assert running.process.stderr is not None
        tcp = running.process.stderr.readline().rsplit(" ", 1)[1].strip()
        issuer = Issuer(KeyDirectory(keys).signing_key())
        plain = issuer.issue("admin", ["broker:admin"], audience="agentsudo-broker").token
        assert BrokerClient(tcp, credential=plain).revoke(jti="j-1")["target"] == "j-1"
        bound = issuer.issue(
            "admin", ["broker:admin"], audience="agentsudo-broker", jkt=DPoPKey.generate().jkt
        ).token
        with pytest.raises(InvalidTokenError, match="bound to a key"):
            BrokerClient(tcp, credential=bound).revoke(jti="j-2")
    finally:
        running.stop()
