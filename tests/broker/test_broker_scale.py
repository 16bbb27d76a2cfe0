"""Two broker processes on one real redis-server serve the same state (issue 9, part 8).

A request filed through one broker is seen, approved and answered through the
other; a revocation made through one is in the other's signed list; a one-time
mark made by one is the same mark for every verifier of the store. Both
brokers share one key directory (the same operator, two processes).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from installed_cli import AGENTSUDO, sh

from agentsudo_tokens import KeySet, RevokedTokenError, Verifier
from agentsudo_tokens.broker.client import BrokerClient
from agentsudo_tokens.state import open_store
from agentsudo_tokens.tokens.revocation_list import parse_revocation_list

pytest.importorskip("uvicorn")
redis = pytest.importorskip("redis")

ME = os.getuid()
POLICY = f"""
[broker]
admins = ["uid:{ME}"]

[agents.SupportBot]
scopes = ["read:orders"]
ask = ["delete:customer"]
callers = ["uid:{ME}"]
"""
AGENT = """
import json, os, sys
from agentsudo_tokens import Agent, ask, sudo
from agentsudo_tokens.errors import PermissionDeniedError

@sudo(scope="delete:customer", on_deny=ask(timeout=120, poll_interval=0.05))
def delete_customer(customer_id):
    return f"deleted {customer_id}"

with Agent.from_token(os.environ["AGENTSUDO_TOKEN"]).start_session():
    try:
        print(json.dumps({"result": delete_customer("c-7")}), flush=True)
    except PermissionDeniedError as exc:
        print(json.dumps({"refused": str(exc)}), flush=True)
"""


class Twin:
    """One of the two brokers: its own socket, the shared keys and Redis."""

    def __init__(self, root: Path, keys: Path, store: str, name: str) -> None:
        self.socket = root / f"{name}.sock"
        (root / f"{name}.toml").write_text(POLICY)
        self.process = subprocess.Popen(
            [AGENTSUDO, "serve", "--policy", str(root / f"{name}.toml"), "--keys-dir", str(keys),
             "--store", store, "--socket", str(self.socket),
             "--audit-log", str(root / f"{name}-audit.jsonl")],
            stderr=subprocess.PIPE, text=True, cwd=root,
        )  # fmt: skip
        assert self.process.stderr is not None
        line = self.process.stderr.readline()
        if "listening on" not in line:
            self.process.kill()
            raise AssertionError(f"broker {name} did not start: {line}")
        self.address = f"unix://{self.socket}"
        self.client = BrokerClient(self.address)

    def stop(self) -> None:
        self.process.terminate()
        try:
            assert self.process.wait(timeout=30) == 0
        finally:
            if self.process.poll() is None:
                self.process.kill()
            assert self.process.stderr is not None
            self.process.stderr.close()


@pytest.fixture
def twins(tmp_path: Path, redis_url: str) -> Iterator[tuple[Twin, Twin, str]]:
    redis.Redis.from_url(redis_url).flushdb()
    assert sh("keys", "init", "--keys-dir", str(tmp_path / "keys"), cwd=tmp_path).returncode == 0
    first = Twin(tmp_path, tmp_path / "keys", redis_url, "first")
    try:
        second = Twin(tmp_path, tmp_path / "keys", redis_url, "second")
    except BaseException:
        first.stop()
        raise
    yield first, second, redis_url
    first.stop()
    second.stop()


def _waiting(client: BrokerClient) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = client.request("GET", "/v1/approvals")["approvals"]
        if found:
            return dict(found[0])
        time.sleep(0.05)
    raise AssertionError("no request came")


def test_filed_on_one_broker_approved_through_the_other(
    twins: tuple[Twin, Twin, str], tmp_path: Path
) -> None:
    first, second, _ = twins
    token = first.client.issue("SupportBot")["token"]
    home = tmp_path / "agent-home"
    home.mkdir()
    env = {**os.environ, "AGENTSUDO_BROKER": first.address, "AGENTSUDO_TOKEN": token}
    for name in ("AGENTSUDO_JWKS", "AGENTSUDO_STORE", "AGENTSUDO_KEYS_DIR"):
        env.pop(name, None)
    agent = subprocess.Popen(
        [sys.executable, "-c", AGENT], cwd=home, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        request = _waiting(second.client)  # filed through the first, seen by the second
        assert request["agent"] == "SupportBot" and request["scope"] == "delete:customer"
        second.client.request("POST", f"/v1/approvals/{request['id']}/approve", {})
        out, err = agent.communicate(timeout=120)
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.communicate()
    assert json.loads(out.strip().splitlines()[-1]) == {"result": "deleted c-7"}, err


def test_a_revocation_through_one_is_in_the_others_signed_list(
    twins: tuple[Twin, Twin, str],
) -> None:
    first, second, _ = twins
    minted = first.client.issue("SupportBot")
    second.client.revoke(token=minted["token"])
    keys = KeySet.from_dict(first.client.jwks())
    for twin in (first, second):
        signed = _revocation_list(twin)
        listed = parse_revocation_list(signed, keys, issuer="agentsudo")
        claims = Verifier(keys).verify(minted["token"])
        with pytest.raises(RevokedTokenError):
            listed.check(claims)


def _revocation_list(twin: Twin) -> str:
    import http.client
    import socket

    class Unix(http.client.HTTPConnection):
        def connect(self) -> None:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.connect(str(twin.socket))

    connection = Unix("localhost", timeout=30)
    try:
        connection.request("GET", "/v1/revocations")
        answer = connection.getresponse()
        assert answer.status == 200
        return answer.read().decode()
    finally:
        connection.close()


def test_a_one_time_token_from_one_broker_is_used_once_across_the_store(
    twins: tuple[Twin, Twin, str],
) -> None:
    first, second, redis_url = twins
    minted = first.client.issue("SupportBot", once=True)
    keys = KeySet.from_dict(second.client.jwks())
    with open_store(redis_url) as store:
        assert Verifier(keys, store=store).verify(minted["token"]).subject == "SupportBot"
        with pytest.raises(RevokedTokenError, match="already used"):
            Verifier(keys, store=store).verify(minted["token"])
