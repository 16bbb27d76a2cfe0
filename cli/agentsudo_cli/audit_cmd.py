"""``agentsudo audit``: check the hash chain of an audit file, and show who did what."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ._common import json_option, terminal_safe

if TYPE_CHECKING:
    from collections.abc import Callable

    from agentsudo_tokens.broker.audit import SignedHead
    from agentsudo_tokens.tokens.jwks import KeySource

OUTCOMES = ("allowed", "denied", "audit_violation", "approved", "refused")
SESSION_EVENTS = ("session_start", "session_end")
BROKER_OUTCOMES = (  # the broker's audit (agentsudo serve --audit-log)
    "issued",
    "broker_refused",
    "revoked",
    "elevation_requested",
    "elevation_answered",
    "elevation_issued",
    "elevation_notify_failed",
    "policy_reloaded",
    "policy_reload_failed",
    "broker_started",
    "broker_stopped",
)
HEAD = "head"  # a signed chain head: shown only with --outcome head


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


def _when(seconds: int | None) -> str:
    if seconds is None:
        return "-"
    moment = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    return moment.isoformat().replace("+00:00", "Z")


@audit.command("verify")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--jwks",
    default=None,
    metavar="PATH_OR_URL",
    help="The public keys that check a broker audit's signed heads [default: AGENTSUDO_JWKS, "
    "else the broker's (AGENTSUDO_BROKER), else <keys-dir>/jwks.json].",
)
@click.option(
    "--all-signed",
    is_flag=True,
    help="Fail unless a signed head covers every event (as a stopped broker leaves it).",
)
@click.option(
    "--broker",
    "against_broker",
    is_flag=True,
    help="Also check FILE against the last head the broker signed (AGENTSUDO_BROKER; an "
    "admin's call): a log cut back to an earlier signed head fails.",
)
@json_option
def verify_file(
    file: Path, jwks: str | None, all_signed: bool, against_broker: bool, as_json: bool
) -> None:
    """Check FILE's hash chain, and each head the broker signed, with the public keys alone.

    Reports the first edited, removed or reordered line, and a signed head that
    does not verify or no longer matches the lines before it (a rewritten part,
    even with every hash recomputed). Lines after the last signed head are only
    chained: they are counted, not vouched for; --broker checks them against
    the head the broker keeps.
    """
    from agentsudo_tokens.broker.audit import verify_audit
    from agentsudo_tokens.errors import ConfigError

    def load_keys() -> KeySource:
        from agentsudo_tokens.tokens.jwks import load_key_source

        from ._common import settings

        source = jwks or settings().jwks_source
        try:
            return load_key_source(source)
        except ConfigError as exc:
            raise ConfigError(
                f"the audit log has signed heads, and the keys to check them cannot be read "
                f"(give --jwks): {exc}"
            ) from exc

    anchor = _broker_head(load_keys) if against_broker else None
    report = verify_audit(file, load_keys=load_keys, anchor=anchor)
    result = report.to_dict()
    if report.ok and all_signed and report.unsigned:
        where = (
            "no signed head"
            if report.last_signed_line is None
            else f"the last signed head at line {report.last_signed_line} "
            f"({_when(report.last_signed_at)})"
        )
        result |= {"ok": False, "problem": f"{report.unsigned} events after {where}"}
    if as_json:
        click.echo(json.dumps(result))
    elif not report.ok and report.bad_line is None:
        click.echo(terminal_safe(f"agentsudo: TAMPERED: {report.problem}"), err=True)
    elif not report.ok and UNKNOWN_KEY in (report.problem or ""):
        click.echo(  # a retired key's head: not a changed file, but not one we can vouch for
            terminal_safe(
                f"agentsudo: CANNOT VERIFY: line {report.bad_line}: {report.problem}; give "
                f"--jwks the public keys kept from before that key was retired "
                f"({report.events} events verified before it)"
            ),
            err=True,
        )
    elif not report.ok:
        click.echo(
            terminal_safe(
                f"agentsudo: TAMPERED: line {report.bad_line}: {report.problem} "
                f"({report.events} events verified before it)"
            ),
            err=True,
        )
    elif not result["ok"]:
        click.echo(f"agentsudo: NOT SIGNED: {result['problem']}", err=True)
    elif report.last_signed_line is None:
        click.echo(f"ok: {report.events} events, chain intact; head {report.head}")
    else:
        after = (
            "every event is signed"
            if not report.unsigned
            else f"{report.unsigned} events after it are not yet signed"
        )
        click.echo(
            f"ok: {report.events} events, chain intact, last signed head at line "
            f"{report.last_signed_line} ({_when(report.last_signed_at)}); {after}; "
            f"head {report.head}"
        )
    if not result["ok"]:
        raise SystemExit(1)


UNKNOWN_KEY = "which the JWKS does not hold"  # broker.audit_verify's words for an unknown kid


def _broker_head(load_keys: Callable[[], KeySource]) -> SignedHead | None:
    """The last head the broker at AGENTSUDO_BROKER signed, verified; None if it has none."""
    from agentsudo_tokens.broker.audit import parse_head
    from agentsudo_tokens.broker.client import BrokerClient
    from agentsudo_tokens.errors import ConfigError

    from ._common import settings

    current = settings()
    if current.broker is None:
        raise ConfigError("--broker: set AGENTSUDO_BROKER to the broker's address")
    answer = BrokerClient.from_settings(current).request("GET", "/v1/audit/head")
    head = answer.get("head") if isinstance(answer, dict) else None
    if head is None:
        return None
    return parse_head(head, load_keys())


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


def _scope(event: dict[str, Any]) -> str:
    """The scope column: a decision's scope, or the scopes a broker event names."""
    scopes = event.get("scopes")
    if event.get("scope") is None and isinstance(scopes, list):
        return terminal_safe(" ".join(map(str, scopes))) or "-"
    return _field(event, "scope")


@audit.command("show")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path), required=False)
@click.option("--agent", default=None, help="Only this agent's events.")
@click.option(
    "--outcome",
    type=click.Choice(OUTCOMES + SESSION_EVENTS + BROKER_OUTCOMES + (HEAD,)),
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
    from agentsudo_tokens.audit.file import read_events

    from ._common import settings

    path = file or settings().audit_log
    if path is None:
        raise click.UsageError("no audit file: give FILE or set AGENTSUDO_AUDIT_LOG")
    shown = 0
    for event in read_events(path):
        if not sessions and outcome is None and event.get("outcome") in SESSION_EVENTS:
            continue
        if outcome is None and event.get("outcome") == HEAD:
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
            f"{_scope(event):<22} {_field(event, 'function')}"
        )
    if not as_json:
        click.echo(f"{shown} event(s)", err=True)


def _evidence() -> None:
    """``audit suggest`` and ``audit report`` (their module: ``evidence_cmd``)."""
    from .evidence_cmd import report, suggest

    audit.add_command(suggest)
    audit.add_command(report)


_evidence()
