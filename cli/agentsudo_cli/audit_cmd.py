"""``agentsudo audit``: check the hash chain of an audit file, and show who did what."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

import click

from ._common import json_option, terminal_safe

OUTCOMES = ("allowed", "denied", "audit_violation", "approved", "refused")
SESSION_EVENTS = ("session_start", "session_end")


def _since(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """``--since 1h`` into the ISO time an event must be at or after."""
    if value is None:
        return None
    from ._common import duration

    seconds = duration(ctx, param, value)
    assert seconds is not None
    start = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=seconds)
    return start.isoformat(timespec="microseconds").replace("+00:00", "Z")


@click.group()
def audit() -> None:
    """Read the JSON-lines audit file (AGENTSUDO_AUDIT_LOG)."""


@audit.command("verify")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@json_option
def verify_file(file: Path, as_json: bool) -> None:
    """Check FILE's hash chain; report the first edited, removed or reordered line."""
    from agentsudo_tokens.audit_file import verify_chain

    report = verify_chain(file)
    if as_json:
        click.echo(json.dumps(report.__dict__ | {"ok": report.ok}))
    elif report.ok:
        click.echo(f"ok: {report.events} events, chain intact; head {report.head}")
    else:
        click.echo(
            terminal_safe(
                f"agentsudo: TAMPERED: line {report.bad_line}: {report.problem} "
                f"({report.events} events verified before it)"
            ),
            err=True,
        )
    if not report.ok:
        raise SystemExit(1)


def _matches(
    event: dict[str, Any], agent: str | None, outcome: str | None, since: str | None
) -> bool:
    if agent is not None and event.get("agent") != agent:
        return False
    if outcome is not None and event.get("outcome") != outcome:
        return False
    return not (since is not None and str(event.get("time", "")) < since)


def _field(event: dict[str, Any], name: str) -> str:
    """One field of an event as table text: ``-`` when absent, escaped for the terminal."""
    value = event.get(name)
    return "-" if value is None or value == "" else terminal_safe(value)


@audit.command("show")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path), required=False)
@click.option("--agent", default=None, help="Only this agent's events.")
@click.option(
    "--outcome",
    type=click.Choice(OUTCOMES + SESSION_EVENTS),
    default=None,
    help="Only this outcome.",
)
@click.option(
    "--since", callback=_since, default=None, help="Only events this recent: 30m, 1h, 2d."
)
@click.option("--sessions", is_flag=True, help="Include session start/end events.")
@json_option
def show(
    file: Path | None,
    agent: str | None,
    outcome: str | None,
    since: str | None,
    sessions: bool,
    as_json: bool,
) -> None:
    """Show which agent did what: a table, or JSON lines with --json.

    FILE defaults to AGENTSUDO_AUDIT_LOG.
    """
    from agentsudo_tokens.audit_file import read_events

    from ._common import settings

    path = file or settings().audit_log
    if path is None:
        raise click.UsageError("no audit file: give FILE or set AGENTSUDO_AUDIT_LOG")
    shown = 0
    for event in read_events(path):
        if not sessions and outcome is None and event.get("outcome") in SESSION_EVENTS:
            continue
        if not _matches(event, agent, outcome, since):
            continue
        shown += 1
        if as_json:
            click.echo(json.dumps(event))
            continue
        if shown == 1:
            click.echo(f"{'TIME':<20} {'AGENT':<16} {'OUTCOME':<16} {'SCOPE':<22} FUNCTION")
        when = _field(event, "time")[:19].replace("T", " ")
        click.echo(  # every field escaped: a name with ESC or a newline cannot forge a row
            f"{when:<20} {_field(event, 'agent'):<16} {_field(event, 'outcome'):<16} "
            f"{_field(event, 'scope'):<22} {_field(event, 'function')}"
        )
    if not as_json:
        click.echo(f"{shown} event(s)", err=True)
