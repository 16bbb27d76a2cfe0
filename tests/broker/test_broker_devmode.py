"""`agentsudo serve --dev`: a laptop's broker grants what dev mode grants, to its own user."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest
from installed_cli import AGENTSUDO, sh

from agentsudo_tokens import KeySet, Verifier
from agentsudo_tokens.broker.client import BrokerClient
from agentsudo_tokens.broker.devmode import DevPolicy
from agentsudo_tokens.broker.policy import Caller, PolicyRefusal
from agentsudo_tokens.errors import ConfigError

pytest.importorskip("uvicorn")


def test_a_dev_broker_serves_its_user_any_agent_with_the_scopes_named(tmp_path: Path) -> None:
    assert sh("keys", "init", cwd=tmp_path).returncode == 0
    broker = subprocess.Popen(
        [AGENTSUDO, "serve", "--dev"], cwd=tmp_path, stderr=subprocess.PIPE, text=True
    )
    try:
        assert broker.stderr is not None
        listening = broker.stderr.readline()
        socket_path = tmp_path / "keys" / "broker.sock"
        assert listening.strip() == f"agentsudo: broker listening on unix://{socket_path}"
        assert broker.stderr.readline().strip() == (
            f"agentsudo: dev mode: export AGENTSUDO_BROKER=unix://{socket_path}"
        )
        client = BrokerClient(f"unix://{socket_path}")
        minted = client.issue("AnyBot", scopes=["read:*", "write:refunds"], ttl=300)
        claims = Verifier(KeySet.from_dict(client.jwks())).verify(minted["token"])
        assert claims.subject == "AnyBot" and claims.scopes.allows("read:orders")
        with pytest.raises(ConfigError, match="no policy to take them from"):
            client.issue("AnyBot")
        assert client.revoke(agent="AnyBot")["revoked"] == "agent"  # its user is its admin
    finally:
        broker.send_signal(signal.SIGTERM)
        assert broker.wait(timeout=30) == 0
        assert broker.stderr is not None
        broker.stderr.close()


def test_serve_needs_a_policy_or_dev(tmp_path: Path) -> None:
    done = subprocess.run(
        [AGENTSUDO, "serve", "--socket", "b.sock"], cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 2 and "--policy FILE, or --dev" in done.stderr


def test_the_dev_policy_refuses_other_users_and_long_ttls() -> None:
    policy = DevPolicy(uid=1000, max_ttl=3600, default_ttl=900, audience="agentsudo")
    mine, other = Caller(uid=1000), Caller(uid=1001)
    grant = policy.grant(mine, "Bot", scopes=["read:orders"], ttl=None, audience=None)
    assert (grant.scopes, grant.ttl, grant.audience) == (("read:orders",), 900, "agentsudo")
    with pytest.raises(PolicyRefusal, match="serves only uid 1000"):
        policy.grant(other, "Bot", scopes=["read:orders"], ttl=None, audience=None)
    with pytest.raises(PolicyRefusal, match=r"TTL of 7200s \(2h\); the maximum is 3600s \(1h\)"):
        policy.grant(mine, "Bot", scopes=["read:orders"], ttl=7200, audience=None)
    with pytest.raises(ConfigError):
        policy.grant(mine, "bad name\n", scopes=["read:orders"], ttl=None, audience=None)
    for ttl in (0, -5, True):  # as a policy file's broker refuses them
        with pytest.raises(ConfigError, match="ttl: expected a positive number of seconds"):
            policy.grant(mine, "Bot", scopes=["read:orders"], ttl=ttl, audience=None)  # type: ignore[arg-type]
    assert policy.is_admin(mine) and not policy.is_admin(other)
    assert not policy.is_admin(Caller(uid=None, credential="x"))
