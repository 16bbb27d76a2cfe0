"""How fast one caller can make the broker write (the fourth attack round).

One caller allowed by the policy could ask for ~1,500 tokens a second, each a
line in the audit (and, with ``once``, a mark in the store); anyone who could
reach the TCP listener got an audit line per request without a credential. Now
each caller has a token bucket (``--issue-burst`` at once, ``--issue-rate`` a
second) for issuance and, apart, for elevation filing; beyond it, a 429 with
``Retry-After`` while everyone else is served. Refusals that may come at line
rate (no valid credential, over the limit) are audited once per caller or
address in a window and then counted into one summary line.

The broker is ``agentsudo serve`` on a socket and on loopback TCP; the bucket
and the refusal log are also tested alone, with a clock the test moves.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import broker_harness
import pytest
from installed_cli import AGENTSUDO

from agentsudo_tokens.broker.ratelimit import MIN_RATE, OTHERS, RateLimiter, RefusalLog, Summary
from agentsudo_tokens.errors import ConfigError
from agentsudo_tokens.state.approvals import canonical_arguments
from agentsudo_tokens.tokens.issuer import Issuer
from agentsudo_tokens.tokens.keydir import KeyDirectory

pytest.importorskip("uvicorn")
pytest.importorskip("starlette")

ME = os.getuid()
POLICY = f"""
[broker]
admins = ["uid:{ME}"]

[agents.SupportBot]
scopes = ["read:orders"]
ask = ["delete:customer"]
max_ttl = "1h"
callers = ["uid:{ME}", "credential:launcher-a", "credential:launcher-b"]
"""
BURST, RATE = 5, 0.5  # small: a test goes beyond them at once, and waits 2 s for one more
UNAUTHENTICATED = 2000
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

    def credential(self, name: str) -> str:
        key = KeyDirectory(self.root / "keys").signing_key()
        return Issuer(key).issue(name, ["broker:issue"], audience="agentsudo-broker").token

    def tcp(self, source: str = "127.0.0.1") -> http.client.HTTPConnection:
        return http.client.HTTPConnection(
            "127.0.0.1", self.port, timeout=30, source_address=(source, 0)
        )

    def unix(self) -> http.client.HTTPConnection:
        return _UnixConnection(self.socket)

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log.read_text().splitlines()]


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path) -> None:
        super().__init__("localhost", timeout=30)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(30)
        self.sock.connect(str(self._path))


def post(
    connection: http.client.HTTPConnection,
    path: str,
    body: dict[str, Any],
    credential: str | None = None,
) -> tuple[int, dict[str, str], dict[str, Any]]:
    """One request on a connection of its own: status, headers (lower-case), JSON body.

    (Not kept alive: a second request on a kept-alive connection waits ~40 ms for a
    delayed ACK, which would make a flood of 2,000 take over a minute.)
    """
    headers = {"content-type": "application/json"}
    if credential is not None:
        headers["authorization"] = f"Bearer {credential}"
    try:
        connection.request("POST", path, body=json.dumps(body).encode(), headers=headers)
        answer = connection.getresponse()
        data = json.loads(answer.read())
    finally:
        connection.close()
    return answer.status, {k.lower(): v for k, v in answer.getheaders()}, data


def issue(connection: http.client.HTTPConnection, credential: str | None = None) -> int:
    return post(connection, "/v1/tokens", {"agent": "SupportBot"}, credential)[0]


@pytest.fixture
def limited(tmp_path: Path) -> Iterator[TcpBroker]:
    """A broker whose callers may make 5 requests at once, then one every 2 s."""
    running = TcpBroker(tmp_path / "broker", "--issue-burst", str(BURST), "--issue-rate", str(RATE))
    yield running
    running.stop()


@pytest.fixture
def default(tmp_path: Path) -> Iterator[TcpBroker]:
    running = TcpBroker(tmp_path / "broker")
    yield running
    running.stop()


def _too_many(answer: tuple[int, dict[str, str], dict[str, Any]], who: str) -> int:
    """The seconds a 429 says to wait; checks it is a one-line problem naming ``who``."""
    status, headers, body = answer
    assert status == 429, body
    assert headers["content-type"] == "application/problem+json"
    assert body["type"] == "urn:agentsudo:problem:too-many-requests"
    assert who in body["detail"] and "rate limit" in body["detail"]
    assert "\n" not in body["detail"]
    retry = int(headers["retry-after"])
    assert 1 <= retry <= 60
    return retry


def _verified(broker: TcpBroker) -> None:
    """``agentsudo audit verify`` on the stopped broker's audit, with its JWKS."""
    jwks = broker.root / "keys" / "jwks.json"
    done = subprocess.run(
        [AGENTSUDO, "audit", "verify", str(broker.log), "--jwks", str(jwks), "--all-signed"],
        capture_output=True, text=True, timeout=60, cwd=broker.root,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok: "), done.stdout


# -- a real broker -------------------------------------------------------------------------


def test_a_caller_beyond_its_burst_waits_while_others_are_served(limited: TcpBroker) -> None:
    a, b = limited.credential("launcher-a"), limited.credential("launcher-b")
    flooder, other, on_socket = limited.tcp(), limited.tcp(), limited.unix()
    assert [issue(flooder, a) for _ in range(BURST)] == [201] * BURST
    answer = post(flooder, "/v1/tokens", {"agent": "SupportBot", "once": True}, a)
    retry = _too_many(answer, "credential:launcher-a")
    assert issue(other, b) == 201  # another credential, from the same address
    assert issue(on_socket) == 201  # and the socket's caller
    assert limited.client.health() == {"status": "ok"}
    time.sleep(retry)
    assert issue(flooder, a) == 201  # served again
    for connection in (flooder, other, on_socket):
        connection.close()


def test_on_the_socket_the_uid_is_limited_and_filing_elevations_apart(
    limited: TcpBroker,
) -> None:
    on_socket = limited.unix()
    token = limited.client.issue("SupportBot")["token"]
    ask = {"token": token, "scope": "delete:customer", "function": "f"}
    ask["arguments"] = canonical_arguments({})
    filed = [post(on_socket, "/v1/elevations", ask)[0] for _ in range(BURST)]
    assert filed == [202] * BURST
    _too_many(post(on_socket, "/v1/elevations", ask), f"uid:{ME}")
    assert issue(on_socket) == 201  # issuance is counted apart
    on_socket.close()


def test_refusals_by_the_policy_are_each_audited_until_the_limit(limited: TcpBroker) -> None:
    on_socket = limited.unix()
    beyond = {"agent": "SupportBot", "scopes": ["delete:customer"]}
    answers = [post(on_socket, "/v1/tokens", beyond)[0] for _ in range(BURST + 200)]
    on_socket.close()
    assert answers[:BURST] == [403] * BURST and set(answers) == {403, 429}
    refused, limited_ = answers.count(403), answers.count(429)  # a slow run refills a little
    assert refused <= BURST + 2
    audited = [e for e in limited.events() if e["outcome"] == "broker_refused"]
    assert len(audited) == refused + 1 and {e["action"] for e in audited} == {"issue"}
    over = [e for e in audited if e["reason"].startswith("over the rate limit")]
    assert len(over) == 1 and over[0]["caller"] == f"uid:{ME}"
    assert all("delete:customer" in e["reason"] for e in audited if e not in over)  # each one
    assert limited.stop() == 0
    summary = [e for e in limited.events() if "refusals" in e]
    assert len(summary) == 1 and summary[0]["refusals"] == limited_ - 1  # counted, in one line
    assert summary[0]["caller"] == f"uid:{ME}"
    assert f"{limited_ - 1} more refusals of uid:{ME}" in summary[0]["reason"]
    _verified(limited)


def test_unauthenticated_callers_add_a_handful_of_audit_lines(default: TcpBroker) -> None:
    assert default.client.health() == {"status": "ok"}  # started: its first lines written
    before = len(default.events())
    attacker, second = default.tcp("127.0.0.1"), default.tcp("127.0.0.2")
    for n in range(UNAUTHENTICATED):
        credential = None if n % 2 else f"x.y.{n}"  # none, or a forged one
        assert issue(attacker, credential) == 401
    assert issue(second) == 401
    attacker.close()
    second.close()
    assert len(default.events()) - before <= HANDFUL  # while the broker runs
    assert default.client.issue("SupportBot")["agent"] == "SupportBot"  # others served
    assert default.stop() == 0
    refused = [e for e in default.events() if e["outcome"] == "broker_refused"]
    assert len(refused) == 3  # each address's first refusal, and one count of the rest
    first, other, summary = refused
    assert first["address"] == "ip:127.0.0.1" and first["reason"].startswith("credential: ")
    assert first["action"] == "POST /v1/tokens" and "caller" not in first
    assert other["address"] == "ip:127.0.0.2" and other["reason"] == "no credential"
    assert summary["address"] == "ip:127.0.0.1" and summary["refusals"] == UNAUTHENTICATED - 1
    assert summary["action"] == "unauthenticated" and summary["seconds"] > 0
    _verified(default)


def test_a_flood_beyond_the_limit_adds_a_handful_of_audit_lines(limited: TcpBroker) -> None:
    credential = limited.credential("launcher-a")
    flooder = limited.tcp()
    statuses = [issue(flooder, credential) for _ in range(1000)]
    flooder.close()
    issued = statuses.count(201)
    assert issued <= BURST + 10 and statuses.count(429) == 1000 - issued
    lines = limited.events()
    assert len([e for e in lines if e["outcome"] == "issued"]) == issued
    assert len([e for e in lines if e["outcome"] == "broker_refused"]) == 1
    assert limited.stop() == 0
    summary = limited.events()[-3]  # then broker_stopped and its head
    assert summary["outcome"] == "broker_refused" and summary["caller"] == "credential:launcher-a"
    assert summary["refusals"] == statuses.count(429) - 1
    _verified(limited)


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--issue-rate", "0"),
        ("--issue-rate", "-1"),
        ("--issue-rate", "nan"),
        ("--issue-rate", "inf"),
        ("--issue-rate", "fast"),
        ("--issue-burst", "0"),
        ("--issue-burst", "1.5"),
        ("--issue-burst", "-2"),
        ("--issue-rate", "1e-320"),  # Retry-After would be infinite: it was a 500 each time
        ("--issue-rate", "1e-300"),
        ("--issue-burst", "9" * 400),  # float(burst) overflowed: a 500 each time
        ("--issue-burst", "\u00b2"),  # a superscript two: isdigit() but no int()
        ("--listen", "127.0.0.1:\u00b2"),
    ],
)
def test_bad_limits_are_refused_by_serve_in_one_line(tmp_path: Path, flag: str, value: str) -> None:
    broker_harness.init_keys(tmp_path)
    (tmp_path / "agentsudo.toml").write_text(POLICY)
    done = subprocess.run(
        [AGENTSUDO, "serve", "--policy", "agentsudo.toml", "--keys-dir", "keys",
         "--socket", str(tmp_path / "broker.sock"), flag, value],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith(f"agentsudo: {flag}: expected ")
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not (tmp_path / "broker.sock").exists()


# -- the bucket and the refusal log, alone -------------------------------------------------


class Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_gives_its_burst_then_its_rate() -> None:
    clock = Clock()
    limits = RateLimiter(rate=2, burst=3, clock=clock)
    assert [limits.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limits.take("a") == pytest.approx(0.5)  # one more in half a second
    clock.now += 0.25
    assert limits.take("a") == pytest.approx(0.25)  # a refusal takes nothing
    clock.now += 0.25
    assert limits.take("a") == 0.0 and limits.take("a") > 0
    assert limits.take("b") == 0.0  # another caller: its own bucket
    clock.now += 3600  # refilled, never beyond the burst
    assert [limits.take("a") for _ in range(4)][-1] > 0


def test_a_bucket_remembers_a_bounded_number_of_callers() -> None:
    clock = Clock()
    limits = RateLimiter(rate=1, burst=1, max_callers=3, clock=clock)
    for key in ("a", "b", "c"):
        assert limits.take(key) == 0.0
    assert limits.take("a") > 0  # seen again: now the most recent
    assert limits.take("d") == 0.0 and len(limits) == 3  # "b", unseen the longest, forgotten
    assert limits.take("a") > 0 and limits.take("c") > 0
    for n in range(10_000):
        limits.take(n)
    assert len(limits) == 3


def test_a_bucket_is_shared_safely_by_threads() -> None:
    limits = RateLimiter(rate=MIN_RATE, burst=100, clock=Clock())  # the clock stands still
    allowed: list[int] = []
    start = threading.Barrier(8)

    def worker() -> None:
        start.wait()
        allowed.append(sum(limits.take("one caller") == 0.0 for _ in range(1000)))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(allowed) == 100


@pytest.mark.parametrize(
    ("rate", "burst"),
    [
        (0, 1),
        (-1, 1),
        (float("nan"), 1),
        (float("inf"), 1),
        (True, 1),
        (1, 0),
        (1, 1.5),
        (1, True),
        (1e-320, 1),
        (1e7, 1),
        (1, 10**400),
    ],
)
def test_a_bucket_is_never_off(rate: Any, burst: Any) -> None:
    with pytest.raises(ConfigError):
        RateLimiter(rate=rate, burst=burst)


def test_the_refusal_log_audits_the_first_of_a_window_and_counts_the_rest() -> None:
    clock = Clock()
    log = RefusalLog(window=60, clock=clock)
    assert log.first("ip:10.0.0.9", "note") is True
    assert [log.first("ip:10.0.0.9") for _ in range(1999)] == [False] * 1999
    assert log.first("uid:1000") is True
    assert log.due() == []  # the windows are open
    clock.now += 30
    assert log.first("uid:1001") is True and log.first("uid:1001") is False
    clock.now += 30
    assert log.due() == [Summary("ip:10.0.0.9", 1999, 60.0, "note")]  # uid:1000: none counted
    assert log.first("ip:10.0.0.9") is True  # a new window: audited in full again
    clock.now += 10
    assert log.due(everything=True) == [Summary("uid:1001", 1, 40.0, None)]  # as it stops
    assert len(log) == 0


def test_the_refusal_log_counts_callers_beyond_its_bound_together() -> None:
    clock = Clock()
    log = RefusalLog(window=60, max_keys=2, clock=clock)
    assert log.first("a") and log.first("b")
    assert not any(log.first(f"ip:10.0.{n // 256}.{n % 256}") for n in range(5000))
    assert len(log) == 2
    clock.now += 60
    assert log.due() == [Summary(OTHERS, 5000, 60.0)]
    assert log.first("c") is True


def test_the_refusal_log_refuses_a_bad_window() -> None:
    for window in (0, -1, float("nan"), float("inf")):
        with pytest.raises(ConfigError):
            RefusalLog(window=window)
