"""Least privilege from evidence: `audit suggest`, `policy unused`, `audit report`.

The trails are real: audit files written by real guarded calls (``set_audit_log``)
and by the broker's own audit (``BrokerAudit``), plus hostile lines appended the
way a writer with access to the file could.
"""

from __future__ import annotations

import datetime
import json
import os
import tomllib
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from installed_cli import sh

from agentsudo_cli.main import cli
from agentsudo_tokens import Agent, Issuer, KeyDirectory, PermissionDeniedError, Verifier, sudo
from agentsudo_tokens.audit.events import set_audit_log
from agentsudo_tokens.audit.file import AuditFile
from agentsudo_tokens.guard.approval_context import ApprovalContext


@sudo(scope="read:orders")
def read_orders() -> str:
    return "orders"


@sudo(scope="read:customers")
def read_customers() -> str:
    return "customers"


@sudo(scope="delete:customer", on_deny="log")
def delete_customer(customer_id: str) -> str:
    return f"deleted {customer_id}"


@sudo(scope="read:payroll")
def read_payroll() -> str:
    return "payroll"


def _by_alice(agent: Agent, scope: str, context: ApprovalContext) -> bool:
    return True


@sudo(scope="write:refunds", on_deny=_by_alice)
def refund(amount: int) -> str:
    return f"refunded {amount}"


def _support_day(log: Path) -> None:
    """SupportBot reads orders and customers, deletes in audit mode, is denied payroll,
    and has a refund approved; AnalyticsBot reads orders."""
    set_audit_log(log)
    granted = ["read:orders", "read:customers", "write:everything"]
    with Agent("SupportBot", granted).start_session():
        read_orders()
        read_orders()
        read_customers()
        delete_customer("c1")
        with pytest.raises(PermissionDeniedError):
            read_payroll()
        refund(5)
    with Agent("AnalyticsBot", ["read:*"]).start_session():
        read_orders()
    set_audit_log(None)


def _run(*args: str, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(cli, list(args), env=env)


def test_suggest_prints_exactly_the_scopes_used_as_policy_toml(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    _support_day(log)
    done = _run("audit", "suggest", "--agent", "SupportBot", str(log))
    assert done.exit_code == 0, done.output
    snippet = tomllib.loads(done.stdout)
    assert snippet == {
        "agents": {"SupportBot": {"scopes": ["delete:customer", "read:customers", "read:orders"]}}
    }  # not write:everything (granted, unused), not read:payroll (denied), not the refund
    assert "# from audit-mode violations (not granted then): delete:customer (1 calls)" in (
        done.stdout
    )
    assert '# approved by a human one call at a time; keep them so: ask = ["write:refunds"]' in (
        done.stdout
    )
    assert "# read:* would cover read:customers, read:orders (not applied" in done.stdout


def test_suggest_reads_agentsudo_audit_log_and_leaves_out_older_events(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    old = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=30)
    writer = AuditFile(log)  # an event of a month ago, in the same chain
    writer.append(
        {
            "time": old.isoformat().replace("+00:00", "Z"),
            "outcome": "allowed",
            "agent": "SupportBot",
            "jti": None,
            "scope": "admin:everything",
            "function": "wipe",
            "signed": False,
            "reason": None,
            "chain": ["SupportBot"],
        }
    )
    writer.close()
    _support_day(log)
    env = {"AGENTSUDO_AUDIT_LOG": str(log)}
    recent = _run("audit", "suggest", "--agent", "SupportBot", "--since", "7d", "--json", env=env)
    assert recent.exit_code == 0, recent.output
    assert json.loads(recent.stdout)["scopes"] == [
        "delete:customer",
        "read:customers",
        "read:orders",
    ]
    always = _run("audit", "suggest", "--agent", "SupportBot", "--json", env=env)
    assert "admin:everything" in json.loads(always.stdout)["scopes"]


def test_suggest_for_an_agent_absent_from_the_trail_grants_nothing(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    _support_day(log)
    done = _run("audit", "suggest", "--agent", "Nobody", str(log))
    assert done.exit_code == 0
    assert tomllib.loads(done.stdout) == {"agents": {"Nobody": {"scopes": []}}}


def test_an_agent_name_that_is_no_bare_key_is_quoted_in_the_toml(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    set_audit_log(log)
    with Agent("bot@example.com", ["read:orders"]).start_session():
        read_orders()
    set_audit_log(None)
    done = _run("audit", "suggest", "--agent", "bot@example.com", str(log))
    assert tomllib.loads(done.stdout)["agents"]["bot@example.com"]["scopes"] == ["read:orders"]


def _policy(tmp_path: Path) -> Path:
    policy = tmp_path / "agentsudo.toml"
    policy.write_text(
        "[broker]\n"
        f'admins = ["uid:{os.geteuid()}"]\n'
        "[agents.SupportBot]\n"
        'scopes = ["read:*", "write:refunds", "admin:all"]\n'
        'ask = ["delete:customer"]\n'
        f'callers = ["uid:{os.geteuid()}"]\n'
        "[agents.AnalyticsBot]\n"
        'scopes = ["read:*", "export:reports"]\n'
        f'callers = ["uid:{os.geteuid()}"]\n'
    )
    policy.chmod(0o600)
    return policy


def test_policy_unused_lists_grants_no_call_used_wildcards_included(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    _support_day(log)
    policy = _policy(tmp_path)
    done = _run("policy", "unused", "--policy", str(policy), str(log))
    assert done.exit_code == 0, done.output
    # read:* was used by read:orders; write:refunds by the approved refund; the audit-mode
    # delete is no use of the ask grant (it was not granted)
    assert done.stdout.splitlines() == [
        "SupportBot: admin:all delete:customer",
        "AnalyticsBot: export:reports",
    ]
    as_json = _run("policy", "unused", "--policy", str(policy), "--json", str(log))
    assert json.loads(as_json.stdout)["unused"] == {
        "SupportBot": ["admin:all", "delete:customer"],
        "AnalyticsBot": ["export:reports"],
    }


def test_policy_unused_with_since_counts_only_recent_use(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    writer = AuditFile(log)
    old = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=40)
    writer.append(
        {
            "time": old.isoformat().replace("+00:00", "Z"),
            "outcome": "allowed",
            "agent": "AnalyticsBot",
            "scope": "export:reports",
        }
    )
    writer.close()
    policy = _policy(tmp_path)
    everything = _run("policy", "unused", "--policy", str(policy), "--json", str(log))
    recent = _run("policy", "unused", "--policy", str(policy), "--since", "30d", "--json", str(log))
    assert json.loads(everything.stdout)["unused"]["AnalyticsBot"] == ["read:*"]
    assert json.loads(recent.stdout)["unused"]["AnalyticsBot"] == ["read:*", "export:reports"]


def _broker_answers(
    tmp_path: Path, key_dir: KeyDirectory, issuer: Issuer, verifier: Verifier
) -> Path:
    """The broker's audit: two elevation requests, one approved by alice, one denied by bob."""
    from agentsudo_tokens.broker.audit import BrokerAudit
    from agentsudo_tokens.broker.elevation import file_elevation
    from agentsudo_tokens.broker.policy import Caller
    from agentsudo_tokens.state import open_store

    path = tmp_path / "broker-audit.jsonl"
    audit = BrokerAudit(path, key_dir.signing_key(), issuer="agentsudo")
    store = open_store(f"sqlite:///{tmp_path / 'state.db'}")
    claims = verifier.verify(issuer.issue("SupportBot", ["read:orders"]).token)
    admin = Caller(uid=0, gids=frozenset(), credential=None)
    for amount, approved, by in ((5, True, "alice"), (5000, False, "bob")):
        filed = file_elevation(
            store,
            claims,
            scope="write:refunds",
            function="refund",
            arguments=f'{{"amount":{amount}}}',
            reason=None,
            timeout=None,
            may_ask=True,
        )
        audit.requested(filed)
        audit.answered(admin, filed, approved=approved, by=by, reason=None if approved else "no")
    audit.seal()
    audit.close()
    store.close()
    return path


def test_report_json_sums_up_who_did_what_with_approvers_and_chains(
    tmp_path: Path, key_dir: KeyDirectory, issuer: Issuer, verifier: Verifier
) -> None:
    log = tmp_path / "audit.jsonl"
    _support_day(log)
    broker = _broker_answers(tmp_path, key_dir, issuer, verifier)
    done = _run("audit", "report", "--format", "json", "--since", "1d", str(log), str(broker))
    assert done.exit_code == 0, done.output
    report = json.loads(done.stdout)
    assert report["ok"] is True
    assert report["agents"]["SupportBot"] == {
        "delete:customer": {"audit_violation": 1},
        "read:customers": {"allowed": 1},
        "read:orders": {"allowed": 2},
        "read:payroll": {"denied": 1},
        "write:refunds": {"approved": 1},
    }
    assert report["agents"]["AnalyticsBot"] == {"read:orders": {"allowed": 1}}
    assert [(d["agent"], d["scope"], d["reason"]) for d in report["denials"]] == [
        ("SupportBot", "read:payroll", "not granted")
    ]
    answers = [(a["source"], a["approved"], a["by"]) for a in report["approvals"]]
    assert answers == [("guard", True, None), ("broker", True, "alice"), ("broker", False, "bob")]
    assert [(f["chain_ok"], f["chain"].split(",")[0]) for f in report["files"]] == [
        (True, "intact"),
        (True, "intact"),
    ]
    per_bucket = [
        sum(v for k, v in b.items() if k not in ("start", "seconds")) for b in report["timeline"]
    ]
    assert sum(per_bucket) == 7  # every decision, in some bucket


def test_a_guard_approval_names_its_approver_from_the_broker(tmp_path: Path) -> None:
    from agentsudo_tokens.audit.report import build_report
    from agentsudo_tokens.audit.trail import Trail

    log = tmp_path / "audit.jsonl"
    writer = AuditFile(log)
    writer.append(
        {
            "time": "2026-03-01T10:00:00Z",
            "outcome": "approved",
            "agent": "SupportBot",
            "scope": "write:refunds",
            "function": "refund",
            "reason": "approved by uid:0 (apr_AbC123)",
        }
    )
    writer.close()
    (row,) = build_report(Trail([log])).approvals
    assert (row["by"], row["request"], row["approved"]) == ("uid:0", "apr_AbC123", True)


HOSTILE = [
    ("agent", "<script>alert('agent')</script>"),
    ("scope", 'read:orders"><img src=x onerror=alert(1)>'),
    ("function", "<img src=x onerror=alert('function')>"),
    ("reason", "</td></tr></table><svg onload=alert(1)>"),
]


class _Tags(HTMLParser):
    """Every tag and attribute name in a page."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.attributes: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.attributes.update(name for name, _ in attrs)


def test_hostile_text_in_the_trail_comes_out_escaped_in_the_html_report(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    _support_day(log)
    writer = AuditFile(log)  # lines a writer with access could add, chained like the rest
    now = datetime.datetime.now(datetime.UTC).isoformat().replace("+00:00", "Z")
    for outcome in ("denied", "approved", "allowed"):
        writer.append({"time": now, "outcome": outcome, **dict(HOSTILE)})
    writer.close()
    out = tmp_path / "report.html"
    done = _run("audit", "report", "--format", "html", "-o", str(out), str(log))
    assert done.exit_code == 0, done.output
    page = out.read_text()
    parser = _Tags()
    parser.feed(page)
    assert parser.tags <= {
        "html", "head", "meta", "title", "style", "body", "h1", "h2", "p", "span", "ul", "li",
        "table", "thead", "tbody", "tr", "th", "td", "code", "svg", "g", "rect", "text",
    }  # fmt: skip
    assert not {a for a in parser.attributes if a.startswith("on")}
    assert "<script" not in page and "<img" not in page and "<svg onload" not in page
    assert "&lt;script&gt;alert(&#x27;agent&#x27;)&lt;/script&gt;" in page
    assert "default-src &#x27;none&#x27;" not in page  # the CSP itself is ours, unescaped
    assert "content=\"default-src 'none'" in page


def _tamper(log: Path) -> None:
    lines = log.read_bytes().splitlines(keepends=True)
    lines[2] = lines[2].replace(b'"read:orders"', b'"read:ORDERS"')
    log.write_bytes(b"".join(lines))


@pytest.mark.parametrize(
    ("damage", "said"),
    [
        (lambda log: log.write_bytes(log.read_bytes() + b'{"time":"2026-'), "a torn line"),
        (_tamper, "hash chain BROKEN at line 3: edited: its hash does not match"),
        (lambda log: log.write_text("hello, this is no audit log\n"), "not an audit log"),
        (lambda log: log.write_bytes(b"\xff\xfe\x00garbage\n"), "not an audit log"),
        (lambda log: log.unlink(), "cannot be read"),
        (
            lambda log: (
                log.with_name("elsewhere").write_text("")
                or log.unlink()
                or log.symlink_to("elsewhere")
            ),
            "cannot be read",
        ),
        (
            lambda log: log.write_bytes(log.read_bytes().replace(b"\n", b"\nnot json\n", 1)),
            "line 2: not valid JSON",
        ),
    ],
    ids=["torn", "tampered", "text", "binary", "missing", "symlink", "garbage-line"],
)
@pytest.mark.parametrize("form", ["html", "json"])
def test_bad_input_is_said_in_the_report_and_on_stderr_never_a_traceback(
    tmp_path: Path, damage: Any, said: str, form: str
) -> None:
    log = tmp_path / "audit.jsonl"
    _support_day(log)
    damage(log)
    done = _run("audit", "report", "--format", form, str(log))
    assert done.exit_code == 1, done.output
    assert done.exception is None or isinstance(done.exception, SystemExit)
    assert "Traceback" not in done.output
    assert said in done.stderr
    assert "the trail is not whole" in done.stderr
    assert said.replace("'", "&#x27;") in done.stdout  # the report says it too
    if form == "json":
        assert json.loads(done.stdout)["ok"] is False
    suggest = _run("audit", "suggest", "--agent", "SupportBot", str(log))
    assert suggest.exit_code == 1 and said in suggest.stderr
    assert "Traceback" not in suggest.output


def test_a_hostile_scope_is_not_suggested(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    writer = AuditFile(log)
    for scope in ("read:orders", "read:*", "bad scope\n[agents.Evil]", "**", 7):
        writer.append(
            {"time": "2026-03-01T10:00:00Z", "outcome": "allowed", "agent": "A", "scope": scope}
        )
    writer.close()
    done = _run("audit", "suggest", "--agent", "A", str(log))
    assert tomllib.loads(done.stdout.split("\n", 1)[1]) == {
        "agents": {"A": {"scopes": ["read:orders"]}}
    }  # a wildcard or junk in an event is no evidence; a non-text scope is a bad line
    assert done.exit_code == 1 and "line 5: not an audit event (scope is not text)" in done.stderr


def test_without_any_file_the_commands_say_so(tmp_path: Path) -> None:
    done = _run("audit", "report")
    assert done.exit_code == 2
    assert "no audit file: give FILES or set AGENTSUDO_AUDIT_LOG" in done.output


def test_the_installed_cli_writes_an_html_report(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    _support_day(log)
    done = sh("audit", "report", "--since", "30d", "-o", "r.html", str(log), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    page = (tmp_path / "r.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "<svg" in page and "SupportBot" in page
    assert "report written to r.html" in done.stderr


def test_the_brokers_approvals_count_as_use_once_whichever_file_has_them(tmp_path: Path) -> None:
    """Under a broker the agent often keeps no audit file: the broker's elevation_answered
    is the evidence that a human approved a call of the ask grant (review of the README)."""
    broker_log, guard_log = tmp_path / "broker-audit.jsonl", tmp_path / "audit.jsonl"
    answered = {
        "time": "2026-03-01T10:00:00Z",
        "outcome": "elevation_answered",
        "agent": "SupportBot",
        "scope": "delete:customer",
        "function": "delete_customer",
        "request": "apr_AbC123",
        "approved": True,
        "by": "uid:0 via slack",
    }
    writer = AuditFile(broker_log)
    writer.append(answered)
    writer.append({**answered, "request": "apr_Refused1", "approved": False, "scope": "admin:all"})
    writer.close()
    writer = AuditFile(guard_log)
    writer.append(
        {
            "time": "2026-03-01T10:00:01Z",
            "outcome": "approved",
            "agent": "SupportBot",
            "scope": "delete:customer",
            "function": "delete_customer",
            "reason": "approved by uid:0 via slack (apr_AbC123)",
        }
    )
    writer.close()
    policy = tmp_path / "policy.toml"
    policy.write_text(
        f'[broker]\nadmins = ["uid:{os.geteuid()}"]\n[agents.SupportBot]\n'
        'scopes = ["read:orders"]\nask = ["delete:customer", "admin:all"]\n'
        f'callers = ["uid:{os.geteuid()}"]\n'
    )
    policy.chmod(0o600)
    unused = _run("policy", "unused", "--policy", str(policy), str(broker_log))
    assert unused.stdout.splitlines() == ["SupportBot: read:orders admin:all"], unused.output
    for files in ([broker_log, guard_log], [guard_log, broker_log]):
        done = _run("audit", "suggest", "--agent", "SupportBot", "--json", *map(str, files))
        assert json.loads(done.stdout)["approved"] == {"delete:customer": 1}, done.output
