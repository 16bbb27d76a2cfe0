"""``agentsudo revoke``: refuse a token by ``jti``, or every token of an agent (a kill switch).

    $ agentsudo revoke 3q2-Vx...                      # a jti (from `agentsudo verify --json`)
    $ agentsudo revoke "$TOKEN" --reason "leaked"     # a whole token: its jti and exp
    $ agentsudo revoke --agent SupportBot             # every token issued to it until now

Revocations go to the state store (``--store``, ``AGENTSUDO_STORE``, default
the key directory's ``agentsudo-state.db``); verifiers that use the same store
refuse the tokens. ``store_option`` and ``open_cli_store`` serve the other
state commands too.
"""

from __future__ import annotations

import datetime
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from ._common import json_option, keys_dir_option, settings

if TYPE_CHECKING:
    from agentsudo_tokens.config import Settings
    from agentsudo_tokens.store import Store

F = TypeVar("F", bound=Callable[..., Any])


def store_option(func: F) -> F:
    """``--store URL``: beats AGENTSUDO_STORE, which beats the key directory's SQLite file."""
    return click.option(
        "--store",
        default=None,
        metavar="URL",
        help="State store: sqlite:///path or redis://host:port/db "
        "[env AGENTSUDO_STORE; default <keys-dir>/agentsudo-state.db].",
    )(func)


def open_cli_store(current: Settings) -> Store:
    """The store the settings name (opened lazily: errors come at first use)."""
    from agentsudo_tokens.store import default_store_url, open_store

    return open_store(default_store_url(current))


def when(seconds: float) -> str:
    """Epoch seconds as ``2025-01-31T12:00:00Z``."""
    moment = datetime.datetime.fromtimestamp(int(seconds), datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@click.command(context_settings={"ignore_unknown_options": True})  # a jti may start with "-"
@click.argument("target", metavar="[JTI_OR_TOKEN]", required=False)
@click.option("--agent", default=None, help="Revoke every token of this agent issued until now.")
@click.option("--reason", default=None, help="Why; kept with the revocation.")
@store_option
@json_option
@keys_dir_option
def revoke(
    target: str | None,
    agent: str | None,
    reason: str | None,
    store: str | None,
    as_json: bool,
    keys_dir: Path | None,
) -> None:
    """Revoke a token (its jti, the whole token, or '-' for stdin) or, with --agent, all of an
    agent's tokens issued until now.

    Verifiers that use the same state store refuse revoked tokens; a verifier
    without a store cannot know, and accepts a token until it expires.
    """
    if target is not None and target.startswith("--"):
        raise click.UsageError(f"no such option: {target}")
    if (target is None) == (agent is None):
        raise click.UsageError("give JTI_OR_TOKEN or --agent NAME (one of the two)")
    from agentsudo_tokens.revocation import revoke as revoke_jti
    from agentsudo_tokens.revocation import revoke_agent, revoke_token

    current = settings(keys_dir=keys_dir, store=store)
    if target == "-":
        target = sys.stdin.readline(64 * 1024).strip()
        if not target:
            raise click.UsageError("empty input on stdin")
    with open_cli_store(current) as state:
        if agent is not None:
            done = revoke_agent(state, agent, reason=reason, max_ttl=current.max_ttl)
        elif target is not None and "." in target:
            done = revoke_token(state, target, reason=reason, max_ttl=current.max_ttl)
        else:
            done = revoke_jti(state, str(target), reason=reason, max_ttl=current.max_ttl)
        where = state.url
    if as_json:
        payload = {
            "ok": True,
            "revoked": done.kind,
            "target": done.target,
            "reason": done.reason,
            "revoked_at": done.revoked_at,
            "kept_until": done.kept_until,
            "store": where,
        }
        click.echo(json.dumps(payload))
        return
    if done.kind == "agent":
        what = f"every token of agent {done.target!r} issued until {when(done.revoked_at)}"
    else:
        what = f"token {done.target!r}"
    click.echo(f"revoked: {what} (recorded in {where} until {when(done.kept_until)})")
