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
