"""One caller holding idle connections cannot stop the broker for everyone.

uvicorn's ``limit_concurrency`` counts connections, and nothing used to time out
a connection that never finished its first request: 300 idle sockets made every
other caller's request a 503, root's included, for as long as they stayed open.
Now a connection has ``--header-timeout`` seconds to send a request head, and
one caller (a uid on the socket, an address on TCP) holds at most
``--peer-connections`` connections; the next is answered 429 and closed.

Each test runs ``agentsudo serve`` (the installed command) and attacks it with
raw sockets from this process; the "other caller" on TCP is another loopback
source address (127.0.0.1 against the attacker's 127.0.0.2).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import broker_harness
import pytest

pytest.importorskip("uvicorn")
pytest.importorskip("starlette")

ME = os.getuid()
POLICY = f"""
[broker]
admins = ["uid:{ME}"]

[agents.SupportBot]
scopes = ["read:orders"]
max_ttl = "1h"
callers = ["uid:{ME}"]
"""
ATTACK = 300
CAP = 16  # the default of --peer-connections
WAIT = 60.0  # a safety net for a loaded machine, not a measurement


class DosBroker(broker_harness.Broker):
    """The harness on the socket and on TCP (an ephemeral port on 127.0.0.1)."""

    def __init__(self, root: Path, *extra: str) -> None:
        broker_harness.init_keys(root)
        super().__init__(root, POLICY, "--listen", "127.0.0.1:0", *extra)
        assert self.process.stderr is not None
        line = self.process.stderr.readline()
        assert "listening on http://" in line, line
        self.port = int(line.strip().rpartition(":")[2])


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[DosBroker]:
    """The default configuration: a 10 s request-head deadline, 16 connections per caller."""
    running = DosBroker(tmp_path / "broker")
    yield running
    running.stop()


@pytest.fixture
def impatient(tmp_path: Path) -> Iterator[DosBroker]:
    """A request-head deadline of 1 s, so that a test sees it pass."""
    running = DosBroker(tmp_path / "broker", "--header-timeout", "1")
    yield running
    running.stop()


def _unix(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(path))  # blocking: waits for room in the listen queue
    sock.settimeout(WAIT)
    return sock


def _tcp(port: int, source: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(WAIT)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    return sock


def _answer(sock: socket.socket) -> bytes:
    """Everything the broker sends until it closes the connection."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def _loopback_alias_works() -> bool:
    with contextlib.closing(socket.socket()) as probe:
        try:
            probe.bind(("127.0.0.2", 0))
        except OSError:
            return False
    return True


def _healthz(port: int, source: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=WAIT, source_address=(source, 0))
    try:
        conn.request("GET", "/healthz")
        return conn.getresponse().status
    finally:
        conn.close()


def test_one_uid_holds_at_most_the_cap_on_the_socket(broker: DosBroker) -> None:
    held = [_unix(broker.socket) for _ in range(ATTACK)]  # accepted in order
    try:
        refused = [_answer(sock) for sock in held[CAP:]]  # each answered at once, and closed
        assert all(a.startswith(b"HTTP/1.1 429 ") for a in refused), refused[:1]
        body = json.loads(refused[0].partition(b"\r\n\r\n")[2])
        assert body["type"] == "urn:agentsudo:problem:too-many-connections"
        held[0].sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")  # within the cap: served
        assert held[0].recv(65536).startswith(b"HTTP/1.1 200 ")
    finally:
        for sock in held:
            sock.close()


def test_another_address_is_served_while_one_holds_hundreds_of_connections(
    broker: DosBroker,
) -> None:
    if not _loopback_alias_works():
        pytest.skip("127.0.0.2 is not a usable loopback address here")
    held = [_tcp(broker.port, "127.0.0.2") for _ in range(ATTACK)]
    try:
        held[0].sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")  # a head begun, never ended
        assert _healthz(broker.port, "127.0.0.1") == 200  # was a 503: limit_concurrency
        refused = [_answer(sock) for sock in held[CAP:]]
        assert all(a.startswith(b"HTTP/1.1 429 ") for a in refused), refused[:1]
    finally:
        for sock in held:
            sock.close()


def test_idle_connections_are_closed_after_the_header_deadline(impatient: DosBroker) -> None:
    held = [_unix(impatient.socket) for _ in range(ATTACK)]
    try:
        answers = [_answer(sock) for sock in held]  # returns once the broker closes each one
    finally:
        for sock in held:
            sock.close()
    silent = [a for a in answers if a == b""]  # accepted, then closed: no request head came
    assert len(silent) >= CAP
    assert all(a == b"" or a.startswith(b"HTTP/1.1 429 ") for a in answers)
    # the count went down as they closed: this uid is served again
    assert impatient.client.issue("SupportBot")["agent"] == "SupportBot"


def test_a_started_request_head_that_never_ends_is_answered_408(impatient: DosBroker) -> None:
    with contextlib.closing(_unix(impatient.socket)) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")  # and never the blank line
        answer = _answer(sock)
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert b"request-timeout" in answer


def test_a_client_leaving_mid_body_is_no_error_in_the_log(broker: DosBroker) -> None:
    with contextlib.closing(_unix(broker.socket)) as sock:
        sock.sendall(
            b"POST /v1/tokens HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b'content-length: 100\r\n\r\n{"agent": '
        )
    assert broker.client.issue("SupportBot")["agent"] == "SupportBot"
    assert broker.stop() == 0
    assert "Traceback" not in broker.stderr
    assert "ERROR" not in broker.stderr


def test_tcp_callers_from_many_addresses_leave_the_socket_room(tmp_path: Path) -> None:
    """Many addresses (loopback has millions) fill at most --tcp-connections: a caller on the
    socket is still served, and the next TCP connection is a 503 that closes."""
    if not _loopback_alias_works():
        pytest.skip("127.0.0.x is not a usable loopback range here")
    running = DosBroker(tmp_path / "broker", "--tcp-connections", "8", "--peer-connections", "2")
    held: list[socket.socket] = []
    try:
        for n in range(4):  # 4 addresses x 2 connections: the TCP total
            held += [_tcp(running.port, f"127.0.0.{10 + n}") for _ in range(2)]
        with contextlib.closing(_tcp(running.port, "127.0.0.20")) as late:
            answer = _answer(late)
        assert answer.startswith(b"HTTP/1.1 503 "), answer[:80]
        assert b"8 TCP connections" in answer
        assert running.client.health()["status"] == "ok"  # the socket
        held.pop().close()  # one TCP connection ends: room for another
        deadline = time.monotonic() + WAIT
        while _healthz_status(running.port, "127.0.0.21") != 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        for sock in held:
            sock.close()
        running.stop()


def _healthz_status(port: int, source: str) -> int:
    try:
        return _healthz(port, source)
    except (OSError, http.client.HTTPException):
        return 0


def test_a_malformed_body_on_a_get_leaves_no_traceback(broker: DosBroker) -> None:
    """uvicorn answers 400 itself; the app's answer after that used to be a 60-line
    traceback in the log, for each such request from anyone who can connect."""
    for _ in range(20):
        with contextlib.closing(_tcp(broker.port, "127.0.0.1")) as sock:
            sock.sendall(
                b"GET /healthz HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n"
            )
            assert _answer(sock).startswith(b"HTTP/1.1 400 ")
    assert broker.client.health()["status"] == "ok"
    assert broker.stop() == 0
    assert "Traceback" not in broker.stderr and "Exception" not in broker.stderr, broker.stderr


def test_x_forwarded_for_names_no_one(broker: DosBroker) -> None:
    """Refusals are keyed and audited by the connection's address, not a header it sends."""
    for forged in ("203.0.113.7", "1.2.3.4"):
        conn = http.client.HTTPConnection("127.0.0.1", broker.port, timeout=WAIT)
        try:
            headers = {"x-forwarded-for": forged, "content-type": "application/json"}
            conn.request("POST", "/v1/tokens", body=b'{"agent": "SupportBot"}', headers=headers)
            assert conn.getresponse().status == 401
        finally:
            conn.close()
    assert broker.stop() == 0
    audit = (broker.root / "keys" / "broker-audit.jsonl").read_text()
    assert "203.0.113.7" not in audit and "1.2.3.4" not in audit
    assert '"address":"ip:127.0.0.1"' in audit


def test_a_sighup_just_after_listening_does_not_end_the_broker(tmp_path: Path) -> None:
    import signal

    for n in range(3):
        running = DosBroker(tmp_path / f"broker{n}")
        running.process.send_signal(signal.SIGHUP)  # before the app's reload handler, maybe
        assert running.client.health()["status"] == "ok"
        assert running.stop() == 0, running.stderr
