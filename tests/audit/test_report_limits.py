"""``audit report`` / ``suggest`` / ``policy unused`` at the edges: times at the ends of the
calendar, spans of millennia, and one approval written by both the guard and the broker."""

from __future__ import annotations

import datetime
import json
import os
import random
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from installed_cli import sh

from agentsudo_cli.main import cli
from agentsudo_tokens import Issuer, KeyDirectory, Verifier
from agentsudo_tokens.audit.file import AuditFile
from agentsudo_tokens.audit.report import buckets, build_report
from agentsudo_tokens.audit.report_html import render_html
from agentsudo_tokens.audit.trail import Trail, parse_time


def _log(path: Path, *times: str, outcome: str = "allowed") -> Path:
    """A properly chained audit file: one call by SupportBot at each time."""
    writer = AuditFile(path)
    for moment in times:
        writer.append(
            {
                "time": moment,
                "outcome": outcome,
                "agent": "SupportBot",
                "scope": "read:orders",
                "function": "f",
            }
        )
    writer.close()
    return path


def _run(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args))


OUT_OF_RANGE = [
    "0001-01-01T00:00:00+01:00",  # in UTC: year 0
    "9999-12-31T23:59:59-01:00",  # in UTC: year 10000
    "0001-01-01T00:00:00+23:59",
]
SAID = "line 2: not an audit event (time is not an ISO 8601 time with an offset, years 1-9999)"


@pytest.mark.parametrize("moment", OUT_OF_RANGE)
def test_parse_time_says_none_for_a_time_out_of_range_in_utc(moment: str) -> None:
    assert parse_time(moment) is None
    assert parse_time("0001-01-01T00:00:00Z") == datetime.datetime.min.replace(tzinfo=datetime.UTC)


@pytest.mark.parametrize("moment", OUT_OF_RANGE)
def test_a_time_out_of_range_is_a_problem_line_in_every_command(
    tmp_path: Path, moment: str
) -> None:
    log = _log(tmp_path / "audit.jsonl", "2026-12-01T10:00:00Z", moment)
    for form in ("json", "html"):
        done = _run("audit", "report", "--format", form, str(log))
        assert done.exit_code == 1, done.output
        assert done.exception is None or isinstance(done.exception, SystemExit)
        assert SAID in done.stderr and "the trail is not whole" in done.stderr
        assert SAID in done.stdout  # the report is written, and says it
    report = json.loads(_run("audit", "report", "--format", "json", str(log)).stdout)
    assert report["agents"] == {"SupportBot": {"read:orders": {"allowed": 1}}}
    since = _run("audit", "report", "--format", "json", "--since", "7d", str(log))
    assert since.exit_code == 1 and SAID in since.stderr
    suggest = _run("audit", "suggest", "--agent", "SupportBot", str(log))
    assert suggest.exit_code == 1 and SAID in suggest.stderr
    assert "read:orders" in suggest.stdout
    policy = tmp_path / "agentsudo.toml"
    policy.write_text(
        f'[broker]\nadmins = ["uid:{os.geteuid()}"]\n[agents.SupportBot]\n'
        f'scopes = ["read:orders", "write:refunds"]\ncallers = ["uid:{os.geteuid()}"]\n'
    )
    policy.chmod(0o600)
    unused = _run("policy", "unused", "--policy", str(policy), "--json", str(log))
    assert unused.exit_code == 1, unused.output
    assert json.loads(unused.stdout)["unused"] == {"SupportBot": ["write:refunds"]}


def test_the_installed_cli_says_an_out_of_range_time_never_an_internal_error(
    tmp_path: Path,
) -> None:
    log = _log(tmp_path / "audit.jsonl", "2026-12-01T10:00:00Z", OUT_OF_RANGE[0])
    done = sh("audit", "report", "--format", "json", "-o", "r.json", str(log), cwd=tmp_path)
    assert done.returncode == 1
    assert "internal error" not in done.stderr and SAID in done.stderr
    assert json.loads((tmp_path / "r.json").read_text())["ok"] is False


def test_a_chart_from_year_1_never_starts_before_year_1(tmp_path: Path) -> None:
    log = _log(tmp_path / "audit.jsonl", "0001-01-02T00:00:00Z", "2026-01-01T00:00:00Z")
    done = _run("audit", "report", "--format", "json", str(log))
    assert done.exit_code == 0, done.output
    timeline = json.loads(done.stdout)["timeline"]
    assert 1 <= len(timeline) <= 60
    assert timeline[0]["start"] == "0001-01-02T00:00:00Z"
    assert sum(b["allowed"] for b in timeline) == 2


def test_a_span_of_millennia_is_charted_in_at_most_60_buckets(tmp_path: Path) -> None:
    log = _log(tmp_path / "audit.jsonl", "0001-02-15T00:00:00Z", "9999-11-01T00:00:00Z")
    built = build_report(Trail([log]))
    data = buckets(built)
    assert len(data) <= 60
    assert sum(counts["allowed"] for _, _, counts in data) == 2
    assert data[0][1] % 86400 == 0  # whole days wide
    assert len(render_html(built)) < 60_000


def _spread(times: list[datetime.datetime]) -> list[str]:
    return [t.isoformat().replace("+00:00", "Z") for t in times]


def test_every_event_falls_in_one_of_at_most_60_buckets_whatever_the_span(
    tmp_path: Path,
) -> None:
    rng = random.Random(12)
    low = datetime.datetime(1, 1, 1, tzinfo=datetime.UTC)
    high = datetime.datetime(9999, 12, 31, 23, 59, 59, tzinfo=datetime.UTC)
    for case in range(40):
        first = low + (high - low) * rng.random() ** 3
        span = datetime.timedelta(seconds=10 ** rng.uniform(1, 11.5))
        end = first + min(span, high - first)
        times = [first, first + (end - first) / 3, end]
        if case == 0:
            times = [low, high]
        log = _log(tmp_path / f"audit-{case}.jsonl", *_spread(times))
        data = buckets(build_report(Trail([log])))
        assert 1 <= len(data) <= 60, (case, times, len(data))
        for moment in times:
            minute = moment.replace(second=0, microsecond=0)
            assert any(
                start.timestamp() <= minute.timestamp() < start.timestamp() + size
                for start, size, _ in data
            ), (case, moment)
        assert sum(sum(c.values()) for _, _, c in data) == len(times)


def _answered_by_broker(
    tmp_path: Path, key_dir: KeyDirectory, issuer: Issuer, verifier: Verifier
) -> tuple[Path, str]:
    """The broker's audit of one elevation request, approved by alice; and its id."""
    from agentsudo_tokens.broker.audit import BrokerAudit
    from agentsudo_tokens.broker.elevation import file_elevation
    from agentsudo_tokens.broker.policy import Caller
    from agentsudo_tokens.state import open_store

    path = tmp_path / "broker-audit.jsonl"
    audit = BrokerAudit(path, key_dir.signing_key(), issuer="agentsudo")
    store = open_store(f"sqlite:///{tmp_path / 'state.db'}")
    claims = verifier.verify(issuer.issue("SupportBot", ["read:orders"]).token)
    filed = file_elevation(
        store,
        claims,
        scope="write:refunds",
        function="refund",
        arguments='{"amount":5}',
        reason=None,
        timeout=None,
        may_ask=True,
    )
    audit.requested(filed)
    audit.answered(
        Caller(uid=0, gids=frozenset(), credential=None),
        filed,
        approved=True,
        by="alice",
        reason=None,
    )
    audit.close()
    store.close()
    return path, filed.id


def test_one_approval_in_the_guards_file_and_the_brokers_is_one_row(
    tmp_path: Path, key_dir: KeyDirectory, issuer: Issuer, verifier: Verifier
) -> None:
    broker, request = _answered_by_broker(tmp_path, key_dir, issuer, verifier)
    guard = tmp_path / "agent-audit.jsonl"
    writer = AuditFile(guard)
    now = datetime.datetime.now(datetime.UTC).isoformat().replace("+00:00", "Z")
    base = {"agent": "SupportBot", "scope": "write:refunds", "function": "refund"}
    writer.append(
        base | {"time": now, "outcome": "approved", "reason": f"approved by alice ({request})"}
    )
    writer.append(  # another request, the guard's word only: a row of its own
        base | {"time": now, "outcome": "approved", "reason": "approved by bob (apr_Other1)"}
    )
    writer.close()
    for files in ((guard, broker), (broker, guard)):
        done = _run("audit", "report", "--format", "json", *map(str, files))
        assert done.exit_code == 0, done.output
        report = json.loads(done.stdout)
        assert report["approvals_total"] == 2
        rows = {row["request"]: row for row in report["approvals"]}
        assert len(report["approvals"]) == 2
        assert (rows[request]["source"], rows[request]["by"], rows[request]["approved"]) == (
            "broker+guard",
            "alice",
            True,
        )
        assert rows[request]["agent"] == "SupportBot"
        assert rows["apr_Other1"]["source"] == "guard"


def test_a_guard_and_broker_that_disagree_on_a_request_are_both_shown(
    tmp_path: Path, key_dir: KeyDirectory, issuer: Issuer, verifier: Verifier
) -> None:
    broker, request = _answered_by_broker(tmp_path, key_dir, issuer, verifier)
    guard = tmp_path / "agent-audit.jsonl"
    writer = AuditFile(guard)
    writer.append(
        {
            "time": "2026-03-01T10:00:00Z",
            "outcome": "refused",
            "agent": "SupportBot",
            "scope": "write:refunds",
            "reason": f"denied by mallory ({request})",
        }
    )
    writer.close()
    report = build_report(Trail([guard, broker]))
    assert report.approvals_total == 2
    assert sorted((r["source"], r["approved"]) for r in report.approvals) == [
        ("broker", True),
        ("guard", False),
    ]
