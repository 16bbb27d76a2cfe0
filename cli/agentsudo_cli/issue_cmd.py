"""``agentsudo issue``: mint a token; the token alone goes to stdout."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ._common import duration, json_option, keys_dir_option, scopes_from, settings
from .revoke_cmd import open_cli_store, store_option

if TYPE_CHECKING:
    from agentsudo_tokens.issuer import IssuedToken


def agent_options(func):  # type: ignore[no-untyped-def]
    """--agent, --scopes, --ttl, --aud: what a token says."""
    func = click.option(
        "--aud", multiple=True, help="Audience (repeatable) [env AGENTSUDO_AUDIENCE]."
    )(func)
    func = click.option(
        "--ttl", callback=duration, default=None, help="Lifetime: 90s, 15m, 2h [default 15m]."
    )(func)
    func = click.option(
        "--scopes",
        "--scope",
        "scopes",
        multiple=True,
        required=True,
        help="Scopes, space- or comma-separated, or repeated.",
    )(func)
    return click.option("--agent", required=True, help="The agent's name (the token's sub).")(func)


def mint(
    agent: str,
    scopes: tuple[str, ...],
    ttl: int | None,
    aud: tuple[str, ...],
    keys_dir: Path | None,
    *,
    once: bool = False,
) -> IssuedToken:
    """Mint with the key directory's active key; warn on stderr about `**`."""
    from agentsudo_tokens.issuer import Issuer

    granted = scopes_from(scopes)
    if "**" in granted:
        click.echo("agentsudo: warning: scope '**' grants EVERYTHING", err=True)
    issuer = Issuer.from_settings(settings(keys_dir=keys_dir, ttl=ttl))  # the flag beats the env
    audience = list(aud) if len(aud) > 1 else (aud[0] if aud else None)
    return issuer.issue(agent, granted, ttl=ttl, audience=audience, once=once)


@click.command()
@agent_options
@click.option(
    "--once", is_flag=True, help="One-time: the first verification with the store consumes it."
)
@store_option
@json_option
@keys_dir_option
def issue(
    agent: str,
    scopes: tuple[str, ...],
    ttl: int | None,
    aud: tuple[str, ...],
    once: bool,
    store: str | None,
    as_json: bool,
    keys_dir: Path | None,
) -> None:
    """Mint a short-lived token for an agent and print it.

    \b
    export AGENTSUDO_TOKEN=$(agentsudo issue --agent SupportBot --scopes read:orders,write:refunds)

    With --once the token says it is single-use and is recorded in the state
    store (--store, AGENTSUDO_STORE, default <keys-dir>/agentsudo-state.db)
    before it is printed: the first verifier using that store consumes it, later
    uses fail, and a verifier without a store refuses it.
    """
    minted = mint(agent, scopes, ttl, aud, keys_dir, once=once)
    if once:
        from agentsudo_tokens.onetime import mark_one_time

        with open_cli_store(settings(keys_dir=keys_dir, store=store)) as state:
            mark_one_time(state, minted.claims)  # before the token is shown, or not at all
    if as_json:
        payload = {
            "token": minted.token,
            "header": dict(minted.header),
            "claims": dict(minted.claims),
        }
        if once:
            payload["once"] = True
        click.echo(json.dumps(payload, indent=2))
    else:
        click.echo(minted.token)
