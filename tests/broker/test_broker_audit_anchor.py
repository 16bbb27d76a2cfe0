"""A broker audit cut back to an earlier signed head is caught by the head kept outside the file.

The file alone cannot show it: every line left is chained and signed. The last
head is also kept in the state store (``audit_anchor``) and served to admins at
``GET /v1/audit/head``; a real store here, and a real broker in the end-to-end tests.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from subprocess import CompletedProcess

import pytest
from installed_cli import AGENTSUDO

from agentsudo_tokens import KeySet, PermissionDeniedError, SigningKey
from agentsudo_tokens.broker.audit import AUDIT_FILE, GAP, BrokerAudit, parse_head, verify_audit
from agentsudo_tokens.broker.audit_anchor import AuditAnchor
from agentsudo_tokens.state import open_store


def _written(tmp_path: Path, key: SigningKey, events: int = 6) -> tuple[Path, AuditAnchor, int]:
    """A log of ``events`` events in heads of 3, its anchor, and the line of its first head."""
    log = tmp_path / "broker-audit.jsonl"
    anchor = AuditAnchor(open_store(f"sqlite:///{tmp_path / 'state.db'}"), log)
    anchor.ready = True  # as the broker sets it once it has checked the file
    audit = BrokerAudit(log, key, issuer="agentsudo", every=3, on_head=anchor.keep)
    for n in range(events):
        audit.record("issued", agent=f"Bot{n}")
    audit.close()
    return log, anchor, 4


ME = os.getuid()
AGENT = """
[agents.SupportBot]
scopes = ["read:orders"]
max_ttl = "1h"
callers = ["uid:{me}"]
"""
POLICY = f'[broker]\nadmins = ["uid:{ME}"]\n' + AGENT.format(me=ME)
NOT_ADMIN = f'[broker]\nadmins = ["uid:{ME + 4242}"]\n' + AGENT.format(me=ME)


def _events(log: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def _cut(log: Path, keep: int) -> None:
    lines = log.read_bytes().splitlines(keepends=True)
    log.write_bytes(b"".join(lines[:keep]))


def test_every_head_signed_is_kept_and_verifies(tmp_path: Path) -> None:
    key = SigningKey.generate()
    log, anchor, _ = _written(tmp_path, key)
    kept = anchor.latest()
    assert kept is not None
    head = parse_head(kept, KeySet([key.public]))
    assert head.lines == 7  # 6 events and the first head before the second head
    assert verify_audit(log, KeySet([key.public]), anchor=head).ok
    assert anchor.check(log, KeySet([key.public])) is None


def test_a_log_cut_back_to_an_earlier_head_verifies_alone_but_not_against_the_kept_head(
    tmp_path: Path,
) -> None:
    key = SigningKey.generate()
    log, anchor, first_head = _written(tmp_path, key)
    keys = KeySet([key.public])
    _cut(log, first_head)  # the first three events and their signed head
    alone = verify_audit(log, keys)
    assert alone.ok and alone.unsigned == 0  # what the file alone can say: all is well
    kept = parse_head(str(anchor.latest()), keys)
    report = verify_audit(log, keys, anchor=kept)
    assert not report.ok and "it was cut" in str(report.problem)
    gap = anchor.check(log, keys)
    assert gap is not None and (gap.expected_lines, gap.found_lines) == (8, 4)


def test_an_emptied_or_replaced_log_is_caught(tmp_path: Path) -> None:
    key = SigningKey.generate()
    keys = KeySet([key.public])
    log, anchor, _ = _written(tmp_path, key)
    kept = str(anchor.latest())
    log.write_bytes(b"")
    assert anchor.check(log, keys) is not None
    log.unlink()
    other = BrokerAudit(log, key, issuer="agentsudo", every=3)  # another chain, as long
    for n in range(6):
        other.record("issued", agent=f"Other{n}")
    other.close()
    report = verify_audit(log, keys, anchor=parse_head(kept, keys))
    assert not report.ok and "replaced" in str(report.problem)
    assert anchor.check(log, keys) is not None


def test_a_gap_line_fails_verification_from_then_on(tmp_path: Path) -> None:
    key = SigningKey.generate()
    log, anchor, first_head = _written(tmp_path, key)
    _cut(log, first_head)
    gap = anchor.check(log, KeySet([key.public]))
    assert gap is not None
    audit = BrokerAudit(log, key, issuer="agentsudo", on_head=anchor.keep)
    audit.record(GAP, found_lines=gap.found_lines, problem=gap.problem)
    audit.seal()
    audit.close()
    report = verify_audit(log, KeySet([key.public]))
    assert not report.ok and report.bad_line == first_head + 1
    assert "found this log cut or replaced: the log ends at line 4" in str(report.problem)
    # the anchor now covers the gap line: the next start finds no new gap
    assert anchor.check(log, KeySet([key.public])) is None


def test_a_cut_while_the_broker_runs_is_not_signed_over(tmp_path: Path) -> None:
    """The next head would vouch for the cut file: first a gap line says what was found."""
    key = SigningKey.generate()
    log = tmp_path / "broker-audit.jsonl"
    audit = BrokerAudit(log, key, issuer="agentsudo", every=3)
    for n in range(6):
        audit.record("issued", agent=f"Bot{n}")
    _cut(log, 4)  # someone with the broker's rights, while it runs
    for n in range(3):
        audit.record("issued", agent=f"Later{n}")  # the third seals
    audit.close()
    outcomes = [e["outcome"] for e in _events(log)]
    assert outcomes[4:] == [GAP, "issued", "issued", "issued", "head"], outcomes
    report = verify_audit(log, KeySet([key.public]))
    assert not report.ok and report.bad_line == 5 and "is gone" in str(report.problem)


def test_a_cut_back_to_a_head_while_the_broker_runs_is_caught_at_the_next_event(
    tmp_path: Path,
) -> None:
    """The events after the last head are cut (the head itself stays): the broker's next
    write finds its own last line gone, whatever the heads say."""
    key = SigningKey.generate()
    log = tmp_path / "broker-audit.jsonl"
    audit = BrokerAudit(log, key, issuer="agentsudo", every=3)
    for n in range(5):  # head after 3; two events after it
        audit.record("issued", agent=f"Bot{n}")
    _cut(log, 4)
    audit.record("issued", agent="Later")
    audit.close()
    assert [e["outcome"] for e in _events(log)][4:] == [GAP, "issued", "head"]  # close seals


def test_a_log_cut_then_torn_looks_like_a_crash_but_is_a_gap(tmp_path: Path) -> None:
    key = SigningKey.generate()
    log, anchor, first_head = _written(tmp_path, key)
    _cut(log, first_head)
    with log.open("ab") as handle:
        handle.write(b'{"outcome":"issu')  # as if the broker died mid-line
    gap = anchor.check(log, KeySet([key.public]))
    assert gap is not None


def test_a_kept_head_that_does_not_verify_is_a_gap(tmp_path: Path) -> None:
    key = SigningKey.generate()
    log, anchor, _ = _written(tmp_path, key)
    kept = str(anchor.latest())
    forged = kept[:-4] + ("AAAA" if not kept.endswith("AAAA") else "BBBB")
    anchor.store.put(anchor.key, forged, expires_at=2**40)  # our kid, not our signature
    gap = anchor.check(log, KeySet([key.public]))
    assert gap is not None and "does not verify" in gap.problem


def test_a_kept_head_of_a_retired_key_is_checked_by_its_place(tmp_path: Path) -> None:
    """`keys rotate` and `keys retire` while the broker was away: no false alarm, and a cut
    is still a cut."""
    key = SigningKey.generate()
    log, anchor, first_head = _written(tmp_path, key)
    successor = KeySet([SigningKey.generate().public])  # the old key is no longer published
    assert anchor.check(log, successor) is None
    _cut(log, first_head)
    gap = anchor.check(log, successor)
    assert gap is not None and "it was cut" in gap.problem


def test_an_earlier_gap_line_is_no_new_gap(tmp_path: Path) -> None:
    """A log with an audit_gap line is checked by its chain and place: no gap per restart."""
    key = SigningKey.generate()
    log, anchor, first_head = _written(tmp_path, key)
    _cut(log, first_head)
    audit = BrokerAudit(log, key, issuer="agentsudo", on_head=anchor.keep)
    audit.record(GAP, problem="cut")
    audit.seal()
    audit.close()
    assert anchor.check(log, KeySet([key.public])) is None


def test_each_file_has_its_own_anchor(tmp_path: Path) -> None:
    """A new file name starts a new log (how to rotate); two brokers on one store do not mix."""
    key = SigningKey.generate()
    store = open_store(f"sqlite:///{tmp_path / 'state.db'}")
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    assert AuditAnchor(store, first).key != AuditAnchor(store, second).key
    log, anchor, _ = _written(tmp_path, key)
    assert AuditAnchor(anchor.store, second).check(second, KeySet([key.public])) is None


@pytest.mark.parametrize("bad", ["", "x.y.z", json.dumps({"head": 1})])
def test_a_malformed_kept_head_is_a_gap_not_a_crash(tmp_path: Path, bad: str) -> None:
    key = SigningKey.generate()
    log, anchor, _ = _written(tmp_path, key)
    anchor.store.put(anchor.key, bad, expires_at=2**40)
    gap = anchor.check(log, KeySet([key.public]))
    assert gap is not None and "does not verify" in gap.problem


# --- a real broker: `agentsudo serve`, `agentsudo audit verify` ------------------------------


def _broker_run(root: Path) -> Path:
    """A broker that issues two tokens and stops; its audit log."""
    from broker_harness import Broker

    running = Broker(root, POLICY)
    for _ in range(2):
        running.client.issue("SupportBot")
    assert running.stop() == 0
    return root / "keys" / AUDIT_FILE


def _verify(log: Path, *extra: str, env: dict[str, str] | None = None) -> CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("AGENTSUDO_")}
    return subprocess.run(
        [AGENTSUDO, "audit", "verify", str(log), "--jwks", str(log.parent / "jwks.json"), *extra],
        env=base | (env or {}), capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_a_broker_that_finds_its_log_cut_on_start_says_so_in_the_log(tmp_path: Path) -> None:
    from broker_harness import Broker, init_keys

    init_keys(tmp_path)
    log = _broker_run(tmp_path)
    first_head = next(n for n, e in enumerate(_events(log), 1) if e["outcome"] == "head")
    _cut(log, first_head)  # back to the head signed on start: the issuances are gone
    alone = _verify(log)
    assert alone.returncode == 0, alone.stderr  # the file alone cannot tell
    running = Broker(tmp_path, POLICY)
    assert running.stop() == 0
    assert "cut or replaced while the broker was away" in running.stderr
    gap = [e for e in _events(log) if e["outcome"] == GAP]
    assert len(gap) == 1 and gap[0]["found_lines"] == first_head
    done = _verify(log)
    assert done.returncode == 1 and "found this log cut or replaced" in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_audit_verify_broker_catches_a_cut_made_while_it_runs(tmp_path: Path) -> None:
    from broker_harness import Broker, init_keys

    init_keys(tmp_path)
    running = Broker(tmp_path, POLICY)
    try:
        for _ in range(3):
            running.client.issue("SupportBot")
        log = tmp_path / "keys" / AUDIT_FILE
        env = {"AGENTSUDO_BROKER": running.address}
        running.client.request("POST", "/v1/revocations", {"jti": "x" * 22})  # any admin event
        whole = _verify(log, "--broker", env=env)
        assert whole.returncode == 0, whole.stderr
        _cut(log, 2)  # the start event and its signed head
        cut = _verify(log, "--broker", env=env)
        assert cut.returncode == 1 and "it was cut" in cut.stderr, cut.stderr
        assert _verify(log).returncode == 0  # without --broker the file alone looks whole
    finally:
        running.stop()


def test_only_an_admin_reads_the_kept_head(tmp_path: Path) -> None:
    from broker_harness import Broker, init_keys

    init_keys(tmp_path)
    running = Broker(tmp_path, NOT_ADMIN)
    try:
        with pytest.raises(PermissionDeniedError, match="not an admin"):
            running.client.request("GET", "/v1/audit/head")
        log = tmp_path / "keys" / AUDIT_FILE
        done = _verify(log, "--broker", env={"AGENTSUDO_BROKER": running.address})
        assert done.returncode == 1 and "not an admin" in done.stderr
    finally:
        running.stop()


def test_audit_verify_broker_needs_a_broker(tmp_path: Path) -> None:
    from broker_harness import init_keys

    init_keys(tmp_path)
    log = _broker_run(tmp_path)
    done = _verify(log, "--broker")
    assert done.returncode == 2 and "set AGENTSUDO_BROKER" in done.stderr


def test_no_head_replaces_the_kept_one_before_the_file_was_checked(tmp_path: Path) -> None:
    """A broker that could not read its store on start must not overwrite the head a cut is
    measured against (it would hide the cut once the store is back)."""
    key = SigningKey.generate()
    log, anchor, first_head = _written(tmp_path, key)
    kept = anchor.latest()
    _cut(log, first_head)
    later = AuditAnchor(anchor.store, log)  # a restarted broker, not yet checked
    audit = BrokerAudit(log, key, issuer="agentsudo", on_head=later.keep)
    audit.record("broker_started")
    audit.seal()
    audit.close()
    assert later.latest() == kept
    assert later.check(log, KeySet([key.public])) is not None  # the cut still shows
