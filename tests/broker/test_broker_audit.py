"""The broker's audit (issue 9 part 7): every decision chained, the head signed by the broker.

A real ``agentsudo serve`` issues, refuses, revokes and reloads; ``agentsudo
audit verify`` then checks the file with nothing but a copy of the JWKS, in a
directory and an environment that hold no key. A forger without the key can
edit lines and recompute every hash; a signed head after the edit still
catches it, and lines after the last signed head are reported as unsigned.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from installed_cli import AGENTSUDO, sh

from agentsudo_tokens import PermissionDeniedError
from agentsudo_tokens.audit.file import GENESIS
from agentsudo_tokens.broker.audit import HEAD_EVERY
from agentsudo_tokens.tokens.jws import encode
from agentsudo_tokens.tokens.keydir import KeyDirectory
from agentsudo_tokens.tokens.keys import SigningKey

pytest.importorskip("uvicorn")
pytest.importorskip("starlette")

from test_broker_server import Broker  # noqa: E402  (the harness: agentsudo serve on a socket)

ME = os.getuid()
AGENT_PART = """
[agents.SupportBot]
scopes = ["read:orders", "write:refunds"]
ask = ["delete:customer"]
max_ttl = "1h"
callers = ["uid:{me}"]
"""
POLICY = f'[broker]\nadmins = ["uid:{ME}"]\n' + AGENT_PART.format(me=ME)
NOT_ADMIN = f'[broker]\nadmins = ["uid:{ME + 4242}"]\n' + AGENT_PART.format(me=ME)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    assert sh("keys", "init", "--keys-dir", str(tmp_path / "keys"), cwd=tmp_path).returncode == 0
    return tmp_path


@pytest.fixture
def broker(root: Path) -> Iterator[Broker]:
    running = Broker(root, POLICY)
    yield running
    running.stop()


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTSUDO_")}
    return env | extra


def _jwks_alone(root: Path) -> Path:
    """A copy of the broker's public keys in a directory of their own: all an auditor holds."""
    auditor = root / "auditor"
    auditor.mkdir(exist_ok=True)
    shutil.copy(root / "keys" / "jwks.json", auditor / "jwks.json")
    return auditor / "jwks.json"


def verify(log: Path, jwks: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """``agentsudo audit verify`` with the JWKS alone: no key directory, no AGENTSUDO_*."""
    return subprocess.run(
        [AGENTSUDO, "audit", "verify", str(log), "--jwks", str(jwks), *extra],
        cwd=jwks.parent,
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )


def _lines(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def _write(log: Path, events: list[dict]) -> None:
    log.write_text("".join(json.dumps(e, separators=(",", ":")) + "\n" for e in events))


def _rehash(events: list[dict], start: int = 0) -> list[dict]:
    """What a forger without the key does: recompute every hash from line ``start`` on."""
    previous = events[start - 1]["hash"] if start else GENESIS
    for event in events[start:]:
        event["prev"] = previous
        body = {k: v for k, v in event.items() if k != "hash"}
        canonical = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
        event["hash"] = previous = hashlib.sha256(canonical).hexdigest()
    return events


def _wait_for(log: Path, outcome: str) -> None:
    """Until an event with ``outcome`` is in the file (a signal is handled asynchronously)."""
    deadline = time.monotonic() + 60
    while not any(e["outcome"] == outcome for e in _lines(log)):
        assert time.monotonic() < deadline, f"no {outcome} event: {_lines(log)}"
        time.sleep(0.05)


def _a_full_run(root: Path) -> tuple[Path, dict]:
    """A broker that issues, refuses, revokes and reloads, then stops: its audit, and a token."""
    broker = Broker(root, NOT_ADMIN)
    log = root / "keys" / "broker-audit.jsonl"
    try:
        minted = broker.client.issue("SupportBot", scopes=["read:orders"], ttl=600)
        with pytest.raises(PermissionDeniedError):
            broker.client.issue("SupportBot", scopes=["delete:customer"])
        with pytest.raises(PermissionDeniedError):  # not an admin (yet)
            broker.client.revoke(jti=minted["jti"])
        broker.policy.write_text("[broker\n")  # a bad policy: refused, the old one stays
        broker.process.send_signal(signal.SIGHUP)
        _wait_for(log, "policy_reload_failed")
        broker.policy.write_text(POLICY)  # now this user is an admin
        broker.process.send_signal(signal.SIGHUP)
        _wait_for(log, "policy_reloaded")
        broker.client.revoke(jti=minted["jti"], reason="leaked")
        broker.client.revoke(agent="SupportBot")
    finally:
        assert broker.stop() == 0, broker.stderr
    return log, minted


def test_every_decision_is_audited_and_verified_with_the_jwks_alone(root: Path) -> None:
    log, minted = _a_full_run(root)
    events = _lines(log)
    outcomes = [e["outcome"] for e in events]
    assert outcomes == [
        "broker_started", "head", "issued", "broker_refused", "broker_refused",
        "policy_reload_failed", "policy_reloaded", "revoked", "revoked", "broker_stopped", "head",
    ]  # fmt: skip
    started, _, issued, refused, not_admin, bad, good, by_jti, by_agent, _, _ = events
    assert started["uid"] == ME and started["policy"] == str(root / "agentsudo.toml")
    assert issued["agent"] == "SupportBot" and issued["jti"] == minted["jti"]
    assert issued["scopes"] == ["read:orders"] and issued["ttl"] == 600
    assert issued["caller"] == f"uid:{ME}"
    assert refused["action"] == "issue" and refused["agent"] == "SupportBot"
    assert refused["asked"]["scopes"] == ["delete:customer"] and refused["caller"] == f"uid:{ME}"
    assert "delete:customer" in refused["reason"] and "\n" not in refused["reason"]
    assert not_admin["action"] == "POST /v1/revocations" and "not an admin" in not_admin["reason"]
    assert "reason" in bad and good["policy"] == str(root / "agentsudo.toml")
    assert (by_jti["kind"], by_jti["jti"], by_jti["reason"]) == ("token", minted["jti"], "leaked")
    assert (by_agent["kind"], by_agent["agent"]) == ("agent", "SupportBot")
    assert minted["token"] not in log.read_text()  # never a token
    assert oct(log.stat().st_mode & 0o777) == "0o600" and log.stat().st_uid == os.geteuid()

    done = verify(log, _jwks_alone(root), "--all-signed")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(
        f"ok: {len(events)} events, chain intact, last signed head at line {len(events)} ("
    )
    assert "every event is signed" in done.stdout
    as_json = json.loads(verify(log, _jwks_alone(root), "--json").stdout)
    assert as_json["ok"] and as_json["signed_heads"] == 2 and as_json["unsigned"] == 0

    shown = sh("audit", "show", str(log), "--agent", "SupportBot", cwd=root)
    assert shown.returncode == 0 and "issued" in shown.stdout and "broker_refused" in shown.stdout
    assert "head" not in shown.stdout.split()  # signed heads only with --outcome head


def test_an_edited_line_is_tampered(root: Path) -> None:
    log, _ = _a_full_run(root)
    text = log.read_text().replace('"scopes":["read:orders"]', '"scopes":["read:*"]', 1)
    log.write_text(text)
    done = verify(log, _jwks_alone(root))
    assert done.returncode == 1
    assert done.stderr.startswith("agentsudo: TAMPERED: line 3: edited: its hash does not match")


def test_a_tail_rewritten_with_every_hash_recomputed_is_caught_by_the_signed_head(
    root: Path,
) -> None:
    log, _ = _a_full_run(root)
    events = _lines(log)
    events[2]["scopes"] = ["read:*"]  # the forger widens what was issued ...
    del events[7]  # ... and removes a revocation
    _write(log, _rehash(events, 2))  # every hash after it recomputed: the chain itself holds
    done = verify(log, _jwks_alone(root))
    assert done.returncode == 1
    last = len(events)
    assert done.stderr.strip() == (
        f"agentsudo: TAMPERED: line {last}: a signed head that does not match the chain: "
        f"lines before it were rewritten ({last - 1} events verified before it)"
    )


def test_what_comes_after_the_last_signed_head_is_reported_unsigned(root: Path) -> None:
    log, _ = _a_full_run(root)
    events = _lines(log)
    events[2]["scopes"] = ["read:*"]
    forged = [e for e in events[2:] if e["outcome"] != "head"]  # the heads it cannot sign: gone
    _write(log, _rehash(events[:2] + forged, 2))
    done = verify(log, _jwks_alone(root))
    assert done.returncode == 0, done.stderr  # the chain holds; only line 2 is signed
    assert "last signed head at line 2 (" in done.stdout
    assert f"; {len(forged)} events after it are not yet signed" in done.stdout
    strict = verify(log, _jwks_alone(root), "--all-signed")
    assert strict.returncode == 1
    assert strict.stderr.startswith(
        f"agentsudo: NOT SIGNED: {len(forged)} events after the last signed head at line 2 ("
    )


def _forge_head(sign: Callable[[dict, dict], str]) -> Callable[[list[dict]], None]:
    def forge(events: list[dict]) -> None:
        head = events[-1]
        claims = {"iss": "agentsudo", "iat": int(time.time()), "chain": head["prev"]}
        claims["lines"] = len(events) - 1
        header = {"alg": "EdDSA", "typ": "audit-head+jwt"}
        head["head"] = sign(header, claims)

    return forge


@pytest.mark.parametrize("same_kid", [True, False], ids=["the-broker's-kid", "its-own-kid"])
def test_a_head_signed_by_another_key_is_tampered(root: Path, same_kid: bool) -> None:
    log, _ = _a_full_run(root)
    events = _lines(log)
    events[2]["scopes"] = ["read:*"]
    other = SigningKey.generate()
    kid = KeyDirectory(root / "keys").active().kid if same_kid else other.kid

    def sign(header: dict, claims: dict) -> str:
        return encode(header | {"kid": kid}, claims, other)

    forged = [e for e in events if e["outcome"] != "head" or e is events[1]] + [events[-1]]
    _rehash(forged, 2)
    _forge_head(sign)(forged)
    _write(log, _rehash(forged, len(forged) - 1))
    done = verify(log, _jwks_alone(root))
    assert done.returncode == 1
    # A head by a key the JWKS does not hold could be a forger's or a retired key's: it is
    # not vouched for (exit 1) and is named for what is known, not called a change.
    verdict = "TAMPERED" if same_kid else "CANNOT VERIFY"
    assert done.stderr.startswith(
        f"agentsudo: {verdict}: line {len(forged)}: a signed head that does not verify: "
    )
    why = "does not verify (" if same_kid else "which the JWKS does not hold"
    assert why in done.stderr


def test_a_running_broker_signs_every_hundred_events_and_says_what_is_not_yet_signed(
    broker: Broker,
) -> None:
    log = broker.root / "keys" / "broker-audit.jsonl"
    for _ in range(103):
        broker.client.issue("SupportBot")
    events = _lines(log)
    heads = [n for n, e in enumerate(events, 1) if e["outcome"] == "head"]
    assert heads[0] == 2 and len(heads) >= 2  # after starting; then by count (or by the clock)
    gaps = [after - before - 1 for before, after in zip(heads, heads[1:], strict=False)]
    assert max(gaps) <= HEAD_EVERY and len(events) - heads[-1] < HEAD_EVERY
    unsigned = len(events) - heads[-1]
    env = _clean_env(AGENTSUDO_JWKS=str(_jwks_alone(broker.root)))
    done = subprocess.run(
        [AGENTSUDO, "audit", "verify", str(log)],
        cwd=broker.root / "auditor", env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"last signed head at line {heads[-1]} (" in done.stdout
    if unsigned:
        assert f"; {unsigned} events after it are not yet signed;" in done.stdout


def test_the_audit_log_flag_and_a_file_others_may_write(root: Path) -> None:
    log = root / "audit" / "broker.jsonl"
    log.parent.mkdir()
    running = Broker(root, POLICY, "--audit-log", str(log))
    try:
        running.client.issue("SupportBot")
    finally:
        assert running.stop() == 0
    assert [e["outcome"] for e in _lines(log)][2] == "issued"
    assert not (root / "keys" / "broker-audit.jsonl").exists()
    log.chmod(0o666)  # anyone could rewrite it: the broker does not start on it
    done = sh(
        "serve", "--policy", str(root / "agentsudo.toml"), "--keys-dir", str(root / "keys"),
        "--socket", str(root / "broker.sock"), "--audit-log", str(log), cwd=root,
    )  # fmt: skip
    assert done.returncode == 2 and "listening" not in done.stderr
    assert "writable by group or others" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_a_head_counts_the_lines_other_writers_added(tmp_path: Path) -> None:
    """Two writers on one file (two broker processes, say): each head signs the whole chain."""
    from agentsudo_tokens import KeySet
    from agentsudo_tokens.audit.file import AuditFile
    from agentsudo_tokens.broker.audit import BrokerAudit, parse_head, verify_audit

    key = SigningKey.generate()
    log = tmp_path / "broker-audit.jsonl"
    ours, theirs = BrokerAudit(log, key, issuer="agentsudo", every=3), AuditFile(log)
    ours.record("issued", agent="A")
    theirs.append({"outcome": "issued", "agent": "B"})
    ours.seal()
    for n in range(4):
        theirs.append({"outcome": "issued", "agent": f"C{n}"})
    ours.record("issued", agent="D")
    ours.seal()
    again = BrokerAudit(log, key, issuer="agentsudo")  # a restart: counts the file afresh
    theirs.append({"outcome": "issued", "agent": "E"})
    again.seal()
    report = verify_audit(log, KeySet([key.public]))
    assert report.ok and report.signed_heads == 3 and report.unsigned == 0, report
    assert report.last_signed_line == report.events == 11
    heads = [e for e in _lines(log) if e["outcome"] == "head"]
    assert [parse_head(e["head"], KeySet([key.public])).lines for e in heads] == [2, 8, 10]


def test_a_caller_without_a_credential_over_tcp_is_audited(root: Path) -> None:
    import http.client

    running = Broker(root, POLICY, "--listen", "127.0.0.1:0")
    try:
        assert running.process.stderr is not None
        line = running.process.stderr.readline()  # the second address: http://127.0.0.1:PORT
        host, _, port = line.strip().rpartition("http://")[2].partition(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=30)
        connection.request(
            "POST", "/v1/tokens", body=b'{"agent": "SupportBot"}',
            headers={"content-type": "application/json", "authorization": "Bearer x.y.z"},
        )  # fmt: skip
        assert connection.getresponse().status == 401
        connection.close()
    finally:
        assert running.stop() == 0
    refused = [
        e for e in _lines(root / "keys" / "broker-audit.jsonl") if e["outcome"] == "broker_refused"
    ]
    assert len(refused) == 1 and "caller" not in refused[0]
    assert refused[0]["action"] == "POST /v1/tokens" and refused[0]["reason"].startswith(
        "credential: "
    )


def test_an_elevation_is_audited_from_request_to_its_token(broker: Broker) -> None:
    from agentsudo_tokens.broker.client import BrokerClient
    from agentsudo_tokens.errors import AgentSudoError
    from agentsudo_tokens.state.approvals import canonical_arguments

    minted = broker.client.issue("SupportBot")
    ask = {"token": minted["token"], "function": "delete_customer"}
    ask["arguments"] = canonical_arguments({"customer_id": "c-4242"})
    filed = broker.client.request("POST", "/v1/elevations", ask | {"scope": "delete:customer"})
    broker.client.approve(filed["id"])
    answer = BrokerClient(broker.address, credential=minted["token"]).request(
        "GET", f"/v1/elevations/{filed['id']}"
    )
    assert answer["status"] == "approved"
    with pytest.raises(AgentSudoError):  # not a scope its policy keeps for a human
        broker.client.request("POST", "/v1/elevations", ask | {"scope": "write:refunds"})
    assert broker.stop() == 0
    log = broker.root / "keys" / "broker-audit.jsonl"
    events = {e["outcome"]: e for e in _lines(log)}
    requested, answered = events["elevation_requested"], events["elevation_answered"]
    assert requested["request"] == answered["request"] == filed["id"]
    assert (requested["agent"], requested["jti"]) == ("SupportBot", minted["jti"])
    assert (requested["scope"], requested["function"]) == ("delete:customer", "delete_customer")
    assert len(requested["arguments_sha256"]) == 64 and "c-4242" not in log.read_text()
    assert answered["approved"] is True and answered["caller"] == f"uid:{ME}"
    assert events["elevation_issued"]["request"] == filed["id"]
    refused = events["broker_refused"]
    assert (refused["action"], refused["agent"]) == ("elevation", "SupportBot")
    assert (
        answer["elevation_token"] not in log.read_text() and minted["token"] not in log.read_text()
    )
    done = verify(log, _jwks_alone(broker.root), "--all-signed")
    assert done.returncode == 0, done.stderr
