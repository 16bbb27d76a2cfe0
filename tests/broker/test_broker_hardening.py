"""The broker's own defences, from the third attack round: its credentials are revocable,
its kill switch mints no dead tokens, its socket and policy are only its own to change,
and its revocation list, built at most about once a second, never hides a new revocation."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from installed_cli import AGENTSUDO, sh
from test_broker_server import POLICY, Broker, raw

from agentsudo_tokens.broker.client import BrokerClient
from agentsudo_tokens.errors import AgentSudoError, InvalidTokenError, PermissionDeniedError
from agentsudo_tokens.tokens.issuer import Issuer
from agentsudo_tokens.tokens.keydir import KeyDirectory

pytest.importorskip("uvicorn")

ADMIN_POLICY = POLICY.replace(f'admins = ["uid:{os.getuid()}"]', 'admins = ["credential:ops"]')


@pytest.fixture
def tcp_broker(tmp_path: Path) -> Iterator[tuple[Broker, str]]:
    assert sh("keys", "init", "--keys-dir", str(tmp_path / "keys"), cwd=tmp_path).returncode == 0
    running = Broker(tmp_path, ADMIN_POLICY, "--listen", "127.0.0.1:0")
    assert running.process.stderr is not None
    line = running.process.stderr.readline()
    yield running, line.rsplit(" ", 1)[1].strip()
    running.stop()


def _credential(root: Path, name: str = "ops") -> str:
    key = KeyDirectory(root / "keys").signing_key()
    return Issuer(key).issue(name, ["broker:admin"], audience="agentsudo-broker").token


def test_a_revoked_admin_credential_is_refused(tcp_broker: tuple[Broker, str]) -> None:
    broker, tcp = tcp_broker
    credential = _credential(broker.root)
    admin = BrokerClient(tcp, credential=credential)
    assert admin.request("GET", "/v1/approvals") == {"approvals": []}
    admin.revoke(token=credential, reason="leaked")  # it revokes itself
    with pytest.raises(InvalidTokenError, match="credential refused"):
        admin.request("GET", "/v1/approvals")
    with pytest.raises(InvalidTokenError):
        admin.revoke(agent="SupportBot")
    other = BrokerClient(tcp, credential=_credential(broker.root))
    other.revoke(agent="ops")  # the kill switch for a credential's name works too
    with pytest.raises(InvalidTokenError):
        other.request("GET", "/v1/approvals")


def test_no_token_is_issued_to_an_agent_under_a_kill_switch(tmp_path: Path) -> None:
    assert sh("keys", "init", "--keys-dir", str(tmp_path / "keys"), cwd=tmp_path).returncode == 0
    broker = Broker(tmp_path)
    try:
        assert broker.client.issue("SupportBot")["agent"] == "SupportBot"
        broker.client.revoke(agent="SupportBot")
        with pytest.raises(PermissionDeniedError, match="is revoked until"):
            broker.client.issue("SupportBot")  # not a token that every verifier refuses
    finally:
        broker.stop()


@pytest.mark.parametrize("mode", [0o777, 0o1777, 0o775])
def test_a_socket_directory_others_could_change_is_refused(tmp_path: Path, mode: int) -> None:
    assert sh("keys", "init", "--keys-dir", str(tmp_path / "keys"), cwd=tmp_path).returncode == 0
    (tmp_path / "agentsudo.toml").write_text(POLICY)
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(mode)
    done = subprocess.run(
        [AGENTSUDO, "serve", "--policy", "agentsudo.toml", "--keys-dir", "keys",
         "--socket", str(shared / "broker.sock")],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2 and "could be changed by another user" in done.stderr
    assert not (shared / "broker.sock").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give the policy to another user")
def test_a_policy_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    policy = tmp_path / "agentsudo.toml"
    policy.write_text(POLICY)
    os.chown(policy, 65534, 65534)
    done = subprocess.run(
        [AGENTSUDO, "policy", "check", str(policy)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1 and "belongs to uid 65534" in done.stderr
    assert done.stderr.count(str(policy)) == 1, done.stderr  # named once, not "p: p: ..."


def test_the_cached_revocation_list_shows_a_revocation_at_once(tmp_path: Path) -> None:
    """The list is built at most about once a second, but never hides a revocation made here."""
    assert sh("keys", "init", "--keys-dir", str(tmp_path / "keys"), cwd=tmp_path).returncode == 0
    broker = Broker(tmp_path)
    request = b"GET /v1/revocations HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n"
    try:
        first = raw(broker.socket, request)[2]
        assert raw(broker.socket, request)[2] == first  # the same list, not built again
        broker.client.revoke(agent="Elsewhere")
        assert raw(broker.socket, request)[2] != first  # a revocation here: built anew at once
    finally:
        broker.stop()


def test_a_sigterm_just_after_listening_stops_the_broker_gracefully(tmp_path: Path) -> None:
    """A signal before uvicorn's handlers is neither fatal nor lost: exit 0, audited."""
    import json

    assert sh("keys", "init", "--keys-dir", str(tmp_path / "keys"), cwd=tmp_path).returncode == 0
    for _ in range(5):
        broker = Broker(tmp_path, POLICY)  # returns once "listening on" is said
        assert broker.stop() == 0, broker.stderr
        assert "Traceback" not in broker.stderr
    log = tmp_path / "keys" / "broker-audit.jsonl"
    outcomes = [json.loads(line)["outcome"] for line in log.read_text().splitlines()]
    assert outcomes.count("broker_started") == outcomes.count("broker_stopped") == 5


def test_tcp_connections_to_the_broker_send_without_waiting_for_acks() -> None:
    """TCP_NODELAY on accepted connections: a kept-alive client is not held ~40 ms a request."""
    import socket

    from agentsudo_tokens.broker.server import bind_tcp

    listening = bind_tcp("127.0.0.1:0")
    client = socket.create_connection(listening.getsockname()[:2], timeout=5)
    accepted, _ = listening.accept()
    try:
        assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        for sock in (accepted, client, listening):
            sock.close()


def test_a_refusal_cannot_be_made_a_way_to_write_much(tmp_path: Path) -> None:
    """Huge names, scopes and audiences are refused before anything is written, and what a
    refusal keeps of a caller's words is short: the audit grows by lines, not by megabytes."""
    import json

    assert sh("keys", "init", "--keys-dir", str(tmp_path / "keys"), cwd=tmp_path).returncode == 0
    broker = Broker(tmp_path)
    log = tmp_path / "keys" / "broker-audit.jsonl"
    try:
        broker.client.health()  # served: the start is audited
        before = log.stat().st_size
        for body in (
            {"agent": "\U0001f600" * 16000},  # 64 KiB of emoji, 3x as JSON escapes
            {"agent": "SupportBot", "scopes": ["read:x"] * 300},
            {"agent": "SupportBot", "scopes": ["read:" + "x" * 300]},
            {"agent": "SupportBot", "audience": ["a"] * 40},
            {"agent": "SupportBot", "audience": "a" * 300},
        ):
            with pytest.raises(AgentSudoError) as caught:
                broker.client.request("POST", "/v1/tokens", body)
            assert "Traceback" not in str(caught.value)
        assert log.stat().st_size == before  # a malformed request is not an event
        wide = ["read:" + "y" * 190 + str(n) for n in range(250)]  # valid, beyond the policy
        with pytest.raises(PermissionDeniedError):
            broker.client.request("POST", "/v1/tokens", {"agent": "SupportBot", "scopes": wide})
        lines = log.read_text().splitlines()
        refused = [json.loads(line) for line in lines if '"broker_refused"' in line]
        assert len(refused) == 1 and len(lines[-1].encode()) < 8192, len(lines[-1])
    finally:
        broker.stop()
    assert len(broker.stderr) < 8192  # the broker's own log keeps it short too


def test_the_broker_follows_a_key_rotation_without_a_restart(tmp_path: Path) -> None:
    """README's rotation (rotate, later retire the old key) with a broker running: it signs
    with the new key within a second or so, so retiring the old one breaks no new token."""
    import json
    import time

    from agentsudo_tokens.tokens.jws import decode_json_part, split

    def kid_of(token: str) -> str:
        return str(decode_json_part(split(token).header, "header")["kid"])

    assert sh("keys", "init", "--keys-dir", str(tmp_path / "keys"), cwd=tmp_path).returncode == 0
    old = KeyDirectory(tmp_path / "keys").active().kid
    broker = Broker(tmp_path)
    try:
        assert kid_of(broker.client.issue("SupportBot")["token"]) == old
        assert sh("keys", "rotate", "--keys-dir", "keys", cwd=tmp_path).returncode == 0
        new = KeyDirectory(tmp_path / "keys").active().kid
        deadline = time.monotonic() + 30
        while kid_of(token := broker.client.issue("SupportBot")["token"]) != new:
            assert time.monotonic() < deadline, "the broker kept its first key"
            time.sleep(0.2)
        kept = sh("keys", "jwks", "--keys-dir", "keys", cwd=tmp_path)  # as the README says
        (tmp_path / "jwks-kept.json").write_text(kept.stdout)
        assert sh("keys", "retire", old, "--keys-dir", "keys", cwd=tmp_path).returncode == 0
        time.sleep(1.2)  # the broker looks at most once a second
        token = broker.client.issue("SupportBot")["token"]
        verified = sh("verify", token, "--keys-dir", "keys", cwd=tmp_path)
        assert verified.returncode == 0, verified.stderr
        assert [k["kid"] for k in broker.client.jwks()["keys"]] == [new]
    finally:
        assert broker.stop() == 0
    log = (tmp_path / "keys" / "broker-audit.jsonl").read_text()
    events = [json.loads(line) for line in log.splitlines()]
    assert any(e["outcome"] == "key_changed" and e["kid"] == new for e in events)
    again = Broker(tmp_path)  # its kept head is the new key's: no false alarm
    assert again.stop() == 0 and "cut or replaced" not in again.stderr
    log_path = str(tmp_path / "keys" / "broker-audit.jsonl")
    current = sh("audit", "verify", log_path, "--jwks", "keys/jwks.json", cwd=tmp_path)
    assert current.returncode == 1 and "CANNOT VERIFY" in current.stderr  # not "TAMPERED"
    assert "TAMPERED" not in current.stderr
    whole = sh("audit", "verify", log_path, "--jwks", "jwks-kept.json", cwd=tmp_path)
    assert whole.returncode == 0, whole.stderr
