"""A broker audit cut back to an earlier signed head is caught by the head kept outside the file.

The file alone cannot show it: every line left is chained and signed. The last
head is also kept in the state store (``audit_anchor``) and served to admins at
``GET /v1/audit/head``; a real store here, and a real broker in the end-to-end tests.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agentsudo_tokens import KeySet, SigningKey
from agentsudo_tokens.broker.audit import GAP, BrokerAudit, parse_head, verify_audit
from agentsudo_tokens.broker.audit_anchor import AuditAnchor
from agentsudo_tokens.state import open_store


def _written(tmp_path: Path, key: SigningKey, events: int = 6) -> tuple[Path, AuditAnchor, int]:
    """A log of ``events`` events in heads of 3, its anchor, and the line of its first head."""
    log = tmp_path / "broker-audit.jsonl"
    anchor = AuditAnchor(open_store(f"sqlite:///{tmp_path / 'state.db'}"), log)
    audit = BrokerAudit(log, key, issuer="agentsudo", every=3, on_head=anchor.keep)
    for n in range(events):
        audit.record("issued", agent=f"Bot{n}")
    audit.close()
    return log, anchor, 4


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
    audit.record(GAP, expected_lines=gap.expected_lines, found_lines=gap.found_lines)
    audit.seal()
    audit.close()
    report = verify_audit(log, KeySet([key.public]))
    assert not report.ok and report.bad_line == first_head + 1
    assert "shorter than its last signed head" in str(report.problem)
    # the anchor now covers the gap line: the next start finds no new gap
    assert anchor.check(log, KeySet([key.public])) is None


def test_a_kept_head_that_does_not_verify_is_a_gap(tmp_path: Path) -> None:
    key = SigningKey.generate()
    log, anchor, _ = _written(tmp_path, key)
    stranger = KeySet([SigningKey.generate().public])
    gap = anchor.check(log, stranger)
    assert gap is not None and "does not verify" in gap.problem


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
