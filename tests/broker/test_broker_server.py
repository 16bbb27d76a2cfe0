"""The broker as a real process on a real Unix socket: identity, policy, problems, signals.

Each test starts ``agentsudo serve`` (the installed command) with a key
directory and a policy of its own, and talks to it with ``BrokerClient`` and
raw HTTP over the socket, as launchers and attackers would.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import broker_harness
import pytest
from installed_cli import AGENTSUDO, sh

from agentsudo_tokens import KeySet, PermissionDeniedError, Verifier
from agentsudo_tokens.broker.client import BrokerClient, BrokerUnavailableError
from agentsudo_tokens.errors import ConfigError

pytest.importorskip("uvicorn")
pytest.importorskip("starlette")

ME = os.getuid()
POLICY = f"""
[broker]
admins = ["uid:{ME}"]

[agents.SupportBot]
scopes = ["read:orders", "write:refunds"]
ask = ["delete:customer"]
max_ttl = "1h"
callers = ["uid:{ME}"]
audiences = ["agentsudo", "billing"]

[agents.Elsewhere]
scopes = ["read:*"]
callers = ["uid:{ME + 4242}"]
"""


class Broker(broker_harness.Broker):
    """The harness with this file's policy by default."""

    def __init__(self, root: Path, policy: str = POLICY, *extra: str) -> None:
        super().__init__(root, policy, *extra)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    assert sh("keys", "init", "--keys-dir", str(tmp_path / "keys"), cwd=tmp_path).returncode == 0
    running = Broker(tmp_path)
    yield running
    running.stop()


def raw(path: Path, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """One raw HTTP/1.1 exchange over the socket: status, headers, body."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(30)
        sock.connect(str(path))
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def post(path: Path, body: bytes, *, content_type: str = "application/json") -> tuple[int, dict]:
    request = (
        f"POST /v1/tokens HTTP/1.1\r\nHost: broker\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body
    status, headers, answer = raw(path, request)
    if status >= 400:
        assert headers["content-type"] == "application/problem+json"
    return status, json.loads(answer)


def test_health_and_the_public_keys(broker: Broker) -> None:
    assert broker.client.health() == {"status": "ok"}
    jwks = broker.client.jwks()
    assert jwks == json.loads((broker.root / "keys" / "jwks.json").read_text())
    assert oct(broker.socket.stat().st_mode & 0o777) == "0o666"  # connecting proves nothing


def test_a_token_within_the_policy(broker: Broker) -> None:
    minted = broker.client.issue("SupportBot")
    assert minted["scopes"] == ["read:orders", "write:refunds"] and minted["agent"] == "SupportBot"
    verifier = Verifier(KeySet.from_dict(broker.client.jwks()))
    claims = verifier.verify(minted["token"])
    assert claims.subject == "SupportBot" and not claims.scopes.allows("delete:customer")
    narrow = broker.client.issue("SupportBot", scopes=["read:orders"], ttl=600, audience="billing")
    claims = verifier.verify(narrow["token"], audience="billing")
    assert claims.ttl == 600 and list(claims.scopes.scopes) == ["read:orders"]


@pytest.mark.parametrize(
    ("ask", "reason"),
    [
        ({"agent": "SupportBot", "scopes": ["delete:customer"]}, "delete:customer"),
        ({"agent": "SupportBot", "scopes": ["read:*"]}, "read:*"),
        ({"agent": "SupportBot", "ttl": 7200}, "7200"),
        ({"agent": "SupportBot", "audience": "payroll"}, "payroll"),
        ({"agent": "Elsewhere"}, "Elsewhere"),
        ({"agent": "NoSuchBot"}, "NoSuchBot"),
    ],
    ids=["ask-scope", "wider-wildcard", "ttl", "audience", "not-a-caller", "unknown-agent"],
)
def test_beyond_the_policy_is_refused_in_one_line(broker: Broker, ask: dict, reason: str) -> None:
    with pytest.raises(PermissionDeniedError) as refused:
        broker.client.issue(**ask)
    message = str(refused.value)
    assert "\n" not in message and reason in message
    assert "Elsewhere" not in message or ask["agent"] == "Elsewhere"  # no other agents' policy
    status, problem = post(broker.socket, json.dumps(ask).encode())
    assert status == 403 and problem["type"] == "urn:agentsudo:problem:forbidden"
    assert set(problem) == {"type", "title", "status", "detail"}


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (b"{not json", "application/json", 400),
        (b"[1, 2]", "application/json", 400),
        (b'{"agent": 7}', "application/json", 400),
        (b'{"agent": "SupportBot", "ttl": "600"}', "application/json", 400),
        (b'{"agent": "SupportBot", "admin": true}', "application/json", 400),
        (b'{"agent": "SupportBot", "ttl": NaN}', "application/json", 400),
        (b'{"agent": "SupportBot"}', "text/plain", 415),
        (b'{"agent": "' + b"x" * 70_000 + b'"}', "application/json", 413),
        (b"[" * 60_000, "application/json", 400),
    ],
    ids=["broken", "array", "wrong-type", "string-ttl", "unknown-field", "nan", "media-type",
         "oversized", "deep"],
)  # fmt: skip
def test_bad_input_is_a_clear_4xx_and_the_broker_keeps_serving(
    broker: Broker, body: bytes, content_type: str, status: int
) -> None:
    got, problem = post(broker.socket, body, content_type=content_type)
    assert got == status and problem["status"] == status and problem["detail"]
    assert "Traceback" not in json.dumps(problem)
    assert broker.client.health() == {"status": "ok"}


def test_unknown_paths_and_methods_are_problems(broker: Broker) -> None:
    status, headers, body = raw(
        broker.socket, b"GET /v1/nothing HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n"
    )
    assert status == 404 and headers["content-type"] == "application/problem+json"
    status, headers, body = raw(
        broker.socket, b"GET /v1/tokens HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n"
    )
    assert status == 405 and json.loads(body)["status"] == 405


def test_a_slow_client_does_not_hold_up_others(broker: Broker) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as slow:
        slow.connect(str(broker.socket))
        slow.sendall(
            b"POST /v1/tokens HTTP/1.1\r\nHost: b\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\n\r\n{"
        )  # and then nothing
        for _ in range(5):
            assert broker.client.issue("SupportBot")["agent"] == "SupportBot"


def test_revocation_by_an_admin(broker: Broker) -> None:
    minted = broker.client.issue("SupportBot")
    done = broker.client.revoke(token=minted["token"], reason="leaked")
    assert done["revoked"] == "token" and done["target"] == minted["jti"]
    done = broker.client.revoke(agent="SupportBot")
    assert done["revoked"] == "agent"
    with pytest.raises(ConfigError, match="exactly one"):
        broker.client.revoke(jti="a" * 22, agent="SupportBot")


def test_a_bad_policy_stops_the_broker_before_it_listens(tmp_path: Path) -> None:
    assert sh("keys", "init", "--keys-dir", str(tmp_path / "keys"), cwd=tmp_path).returncode == 0
    (tmp_path / "agentsudo.toml").write_text("[broker]\nadmins = []\n")
    done = subprocess.run(
        [AGENTSUDO, "serve", "--policy", "agentsudo.toml", "--keys-dir", "keys",
         "--socket", "broker.sock"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "agentsudo.toml" in done.stderr
    assert not (tmp_path / "broker.sock").exists()


def test_sighup_reloads_the_policy_and_a_bad_one_is_refused(broker: Broker) -> None:
    with pytest.raises(PermissionDeniedError):
        broker.client.issue("SupportBot", ttl=3 * 3600)
    broker.policy.write_text(POLICY.replace('max_ttl = "1h"', 'max_ttl = "4h"'))
    broker.process.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            assert broker.client.issue("SupportBot", ttl=3 * 3600)["agent"] == "SupportBot"
            break
        except PermissionDeniedError:
            time.sleep(0.05)
    else:
        raise AssertionError("the reloaded policy never took effect")
    broker.policy.write_text("this is not toml [")
    broker.process.send_signal(signal.SIGHUP)
    time.sleep(0.5)
    assert broker.client.issue("SupportBot", ttl=3 * 3600)["agent"] == "SupportBot"  # kept


def test_sigterm_ends_it_gracefully_and_removes_the_socket(broker: Broker) -> None:
    assert broker.client.health() == {"status": "ok"}
    assert broker.stop(signal.SIGTERM) == 0
    assert not broker.socket.exists()
    with pytest.raises(BrokerUnavailableError, match="cannot be reached"):
        broker.client.health()


def test_over_tcp_a_caller_without_a_broker_credential_is_refused(tmp_path: Path) -> None:
    assert sh("keys", "init", "--keys-dir", str(tmp_path / "keys"), cwd=tmp_path).returncode == 0
    running = Broker(tmp_path, POLICY, "--listen", "127.0.0.1:0")
    try:
        assert running.process.stderr is not None
        line = running.process.stderr.readline()
        assert "listening on http://127.0.0.1:" in line
        tcp = BrokerClient(line.rsplit(" ", 1)[1].strip())
        assert tcp.health() == {"status": "ok"}
        with pytest.raises(Exception, match="credential"):
            tcp.issue("SupportBot")  # no uid over TCP: nobody by name alone
        forged = BrokerClient(tcp.address, credential="not-a-token")
        with pytest.raises(Exception, match="credential refused"):
            forged.issue("SupportBot")
    finally:
        running.stop()
