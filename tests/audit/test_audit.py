"""The audit trail: events, the hash-chained JSON-lines file, and `agentsudo audit`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from agentsudo_cli.main import cli
from agentsudo_tokens import (
    Agent,
    ConfigError,
    Issuer,
    PermissionDeniedError,
    Verifier,
    current_agent,
    sudo,
)
from agentsudo_tokens.audit.events import set_audit_log
from agentsudo_tokens.audit.file import GENESIS, AuditFile, read_events, verify_chain


@sudo(scope="write:refunds")
def process_refund(order_id: str) -> str:
    return f"refunded {order_id}"


@sudo(scope="delete:customer", on_deny="log")
def delete_customer(customer_id: str) -> str:
    return f"deleted {customer_id}"


def _lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_every_decision_and_session_is_a_line(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    set_audit_log(log)
    with Agent("SupportBot", ["write:refunds"]).start_session():
        process_refund("o1")
        with pytest.raises(PermissionDeniedError):

            @sudo(scope="read:payroll")
            def payroll() -> None: ...

            payroll()
        delete_customer("c1")
    outcomes = [(e["outcome"], e["scope"]) for e in _lines(log)]
    assert outcomes == [
        ("session_start", None),
        ("allowed", "write:refunds"),
        ("denied", "read:payroll"),
        ("audit_violation", "delete:customer"),
        ("session_end", None),
    ]
    for event in _lines(log):
        assert event["agent"] == "SupportBot"
        assert str(event["time"]).endswith("Z")
        assert set(event) >= {
            "time",
            "outcome",
            "agent",
            "jti",
            "scope",
            "function",
            "prev",
            "hash",
        }
    assert verify_chain(log).ok


def test_the_file_comes_from_the_environment_and_holds_no_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, issuer: Issuer, verifier: Verifier
) -> None:
    log = tmp_path / "env-audit.jsonl"
    monkeypatch.setenv("AGENTSUDO_AUDIT_LOG", str(log))
    minted = issuer.issue("SupportBot", "write:refunds")
    with Agent.from_token(minted.token, verifier=verifier).start_session():
        process_refund("o1")
    text = log.read_text()
    assert minted.token not in text
    assert minted.token.split(".")[2] not in text  # not even the signature
    assert {e["jti"] for e in _lines(log)} == {minted.claims["jti"]}
    assert os.stat(log).st_mode & 0o777 == 0o600


def test_an_unwritable_audit_file_fails_closed(tmp_path: Path) -> None:
    ran: list[int] = []

    @sudo(scope="write:refunds")
    def refund() -> None:
        ran.append(1)

    with Agent("SupportBot", ["write:refunds"]).start_session():
        set_audit_log(tmp_path / "missing-dir" / "audit.jsonl")
        with pytest.raises(ConfigError, match="audit log"):
            refund()
        set_audit_log(None)
    assert ran == []


def test_a_session_that_cannot_be_recorded_never_starts(tmp_path: Path) -> None:
    set_audit_log(tmp_path / "missing-dir" / "audit.jsonl")
    with pytest.raises(ConfigError, match="audit log"):
        with Agent("SupportBot", ["write:refunds"]).start_session():
            pytest.fail("the body must not run")
    set_audit_log(None)
    assert current_agent() is None  # nothing leaked into the context


def test_threads_write_whole_lines(tmp_path: Path) -> None:
    log = tmp_path / "threads.jsonl"
    sink = AuditFile(log)

    def writer(index: int) -> None:
        for n in range(500):
            sink.append({"outcome": "allowed", "agent": f"T{index}", "n": n})

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    events = _lines(log)
    assert len(events) == 8 * 500
    assert verify_chain(log).ok
    for index in range(8):
        assert sorted(e["n"] for e in events if e["agent"] == f"T{index}") == list(range(500))


WRITER = textwrap.dedent(
    """
    import sys
    from agentsudo_tokens import Agent, sudo

    @sudo(scope="write:refunds")
    def refund(n):
        return n

    name = sys.argv[1]
    with Agent(name, ["write:refunds"]).start_session():
        for n in range(int(sys.argv[2])):
            refund(n)
    """
)


def test_eight_processes_lose_and_tear_nothing(tmp_path: Path) -> None:
    log = tmp_path / "procs.jsonl"
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTSUDO_")}
    env["AGENTSUDO_AUDIT_LOG"] = str(log)
    procs = [
        subprocess.Popen([sys.executable, str(script), f"P{i}", "2000"], env=env) for i in range(8)
    ]
    assert [p.wait(timeout=240) for p in procs] == [0] * 8
    raw = log.read_bytes()
    assert raw.endswith(b"\n")
    events = [json.loads(line) for line in raw.splitlines()]  # every line is valid JSON
    assert len(events) == 8 * (2000 + 2)  # each call, plus session start and end
    for i in range(8):
        mine = [e for e in events if e["agent"] == f"P{i}" and e["outcome"] == "allowed"]
        assert len(mine) == 2000
    report = verify_chain(log)
    assert report.ok and report.events == len(events)


def _chain(tmp_path: Path, count: int = 5) -> Path:
    log = tmp_path / "chain.jsonl"
    sink = AuditFile(log)
    for n in range(count):
        sink.append({"outcome": "allowed", "agent": "A", "scope": "read:x", "n": n})
    return log


def test_an_edited_line_is_named(tmp_path: Path) -> None:
    log = _chain(tmp_path)
    lines = log.read_text().splitlines()
    lines[2] = lines[2].replace('"agent":"A"', '"agent":"B"')
    log.write_text("\n".join(lines) + "\n")
    report = verify_chain(log)
    assert not report.ok and report.bad_line == 3 and "edited" in str(report.problem)


def test_a_removed_line_is_noticed_where_the_chain_breaks(tmp_path: Path) -> None:
    log = _chain(tmp_path)
    lines = log.read_text().splitlines()
    del lines[1]
    log.write_text("\n".join(lines) + "\n")
    report = verify_chain(log)
    assert not report.ok and report.bad_line == 2 and "removed" in str(report.problem)


def test_reordered_lines_are_noticed(tmp_path: Path) -> None:
    log = _chain(tmp_path)
    lines = log.read_text().splitlines()
    lines[1], lines[3] = lines[3], lines[1]
    log.write_text("\n".join(lines) + "\n")
    report = verify_chain(log)
    assert not report.ok and report.bad_line == 2


def test_a_removed_first_line_is_noticed(tmp_path: Path) -> None:
    log = _chain(tmp_path)
    lines = log.read_text().splitlines()
    log.write_text("\n".join(lines[1:]) + "\n")
    assert verify_chain(log).bad_line == 1
    assert (
        _lines(_chain(tmp_path / "x" if (tmp_path / "x").mkdir() is None else tmp_path))[0]["prev"]
        == GENESIS
    )


def test_a_torn_last_line_is_noticed(tmp_path: Path) -> None:
    log = _chain(tmp_path)
    log.write_bytes(log.read_bytes()[:-10])
    report = verify_chain(log)
    assert not report.ok and report.bad_line == 5


def test_appending_after_another_writer_keeps_the_chain(tmp_path: Path) -> None:
    log = tmp_path / "shared.jsonl"
    first, second = AuditFile(log), AuditFile(log)
    for n in range(10):
        (first if n % 3 else second).append({"outcome": "allowed", "n": n})
    assert verify_chain(log).ok and verify_chain(log).events == 10


# --- agentsudo audit --------------------------------------------------------------------------


def test_cli_audit_verify(tmp_path: Path) -> None:
    log = _chain(tmp_path)
    runner = CliRunner()
    ok = runner.invoke(cli, ["audit", "verify", str(log)])
    assert ok.exit_code == 0 and ok.stdout.startswith("ok: 5 events")
    lines = log.read_text().splitlines()
    lines[3] = lines[3].replace('"n":3', '"n":4')
    log.write_text("\n".join(lines) + "\n")
    bad = runner.invoke(cli, ["audit", "verify", str(log)])
    assert bad.exit_code == 1
    assert "line 4" in bad.stderr and "edited" in bad.stderr
    as_json = runner.invoke(cli, ["audit", "verify", str(log), "--json"])
    assert as_json.exit_code == 1 and json.loads(as_json.stdout)["bad_line"] == 4


def test_cli_audit_verify_missing_file(tmp_path: Path) -> None:
    done = CliRunner().invoke(cli, ["audit", "verify", str(tmp_path / "nope.jsonl")])
    assert done.exit_code == 2 and "cannot read" in done.stderr
    assert "Traceback" not in done.stdout + done.stderr


def test_cli_audit_show_answers_which_agent_did_what(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    set_audit_log(log)
    with Agent("SupportBot", ["write:refunds"]).start_session():
        process_refund("o1")
        delete_customer("c1")
    with Agent("AnalyticsBot", ["read:orders"]).start_session():
        with pytest.raises(PermissionDeniedError):
            process_refund("o2")
    set_audit_log(None)
    runner = CliRunner()
    table = runner.invoke(cli, ["audit", "show", str(log)])
    assert table.exit_code == 0
    rows = table.stdout.splitlines()
    assert rows[0].split()[:4] == ["TIME", "AGENT", "OUTCOME", "SCOPE"]
    assert len(rows) == 4  # header + 3 decisions; sessions hidden by default
    denied = runner.invoke(cli, ["audit", "show", str(log), "--outcome", "denied", "--json"])
    events = [json.loads(line) for line in denied.stdout.splitlines()]
    assert [(e["agent"], e["scope"]) for e in events] == [("AnalyticsBot", "write:refunds")]
    mine = runner.invoke(cli, ["audit", "show", str(log), "--agent", "SupportBot", "--json"])
    assert {json.loads(line)["outcome"] for line in mine.stdout.splitlines()} == {
        "allowed",
        "audit_violation",
    }
    recent = runner.invoke(cli, ["audit", "show", str(log), "--since", "1h", "--json"])
    assert len(recent.stdout.splitlines()) == 3
    with_sessions = runner.invoke(cli, ["audit", "show", str(log), "--sessions", "--json"])
    assert len(with_sessions.stdout.splitlines()) == 7


def test_cli_audit_show_reads_the_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = _chain(tmp_path)
    monkeypatch.setenv("AGENTSUDO_AUDIT_LOG", str(log))
    done = CliRunner().invoke(cli, ["audit", "show", "--json"])
    assert done.exit_code == 0 and len(done.stdout.splitlines()) == 5
    assert list(read_events(log))[0]["n"] == 0


def test_event_dict_has_every_field() -> None:
    from dataclasses import fields

    from agentsudo_tokens.audit.events import AuditEvent

    event = AuditEvent("t", "allowed", "A", "j", "s", "f", True, "r")
    assert set(event.to_dict()) == {f.name for f in fields(AuditEvent)}
