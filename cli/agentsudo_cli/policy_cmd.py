"""``agentsudo policy check FILE``: validate a broker policy before the broker reads it.

    $ agentsudo policy check agentsudo.toml
    ok: 1 agents, 2 admins

Exit status: 0 the policy is usable (warnings, if any, on stderr); 1 it is not
(one line on stderr: ``FILE:LINE: key: what was expected, found what``), and
that includes a file that cannot be read; 2 bad usage or configuration
(``AGENTSUDO_MAX_TTL``).
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from ._common import json_option, settings, terminal_safe
from .evidence_cmd import since_time


@click.group()
def policy() -> None:
    """Work with the broker's policy (agentsudo.toml, sudoers for agents)."""


@policy.command("check")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@json_option
def check(file: Path, as_json: bool) -> None:
    """Check FILE as the broker would read it; report the first error with its line."""
    from agentsudo_tokens.broker.policy import PolicyError, load_policy

    current = settings()
    try:
        loaded = load_policy(file, max_ttl=current.max_ttl, audience=current.audience)
    except PolicyError as exc:
        if as_json:
            click.echo(json.dumps({"ok": False, "error": "PolicyError", "message": str(exc)}))
        else:
            click.echo(terminal_safe(f"agentsudo: {exc}"), err=True)
        raise SystemExit(1) from None
    for warning in loaded.warnings:
        click.echo(terminal_safe(f"agentsudo: warning: {warning}"), err=True)
    agents, admins = len(loaded.agents), len(loaded.admins)
    if as_json:
        result = {"ok": True, "agents": agents, "admins": admins, "warnings": loaded.warnings}
        click.echo(json.dumps(result))
    else:
        click.echo(f"ok: {agents} agents, {admins} admins")


@policy.command("unused")
@click.option(
    "--policy",
    "policy_file",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The policy file (agentsudo.toml).",
)
@click.option(
    "--since",
    callback=since_time,
    default=None,
    help="Only calls this recent: 30d, 12h.",
)
@json_option
@click.argument("files", nargs=-1, type=click.Path(dir_okay=False, path_type=Path))
def unused(policy_file: Path, since: str | None, as_json: bool, files: tuple[Path, ...]) -> None:
    """List the grants in the policy that no call in the audit trail used.

    A grant (a wildcard too) is used by an allowed or approved call of its
    agent whose scope it matches. FILES default to AGENTSUDO_AUDIT_LOG.
    """
    from agentsudo_tokens.audit.suggest import Usage, unused_grants
    from agentsudo_tokens.broker.policy import PolicyError, load_policy

    from .evidence_cmd import say_problems, trail_of

    current = settings()
    try:
        loaded = load_policy(policy_file, max_ttl=current.max_ttl, audience=current.audience)
    except PolicyError as exc:
        raise click.ClickException(str(exc)) from None
    trail = trail_of(files, since)
    grants = {name: (*rules.scopes, *rules.ask) for name, rules in loaded.agents.items()}
    never = unused_grants(grants, Usage.of(trail.events()))
    if as_json:
        click.echo(json.dumps({"ok": trail.ok, "unused": never, "problems": trail.problems}))
    elif not never:
        click.echo("every grant was used")
    else:
        for agent, scopes in never.items():
            click.echo(terminal_safe(f"{agent}: {' '.join(scopes)}"))
    say_problems(trail)
    if not trail.ok:
        raise SystemExit(1)
