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

import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from ._common import (
    ID_ARGUMENT_COMMAND,
    broker_of,
    json_option,
    keys_dir_option,
    settings,
    terminal_safe,
)

if TYPE_CHECKING:
    from agentsudo_tokens.broker.client import BrokerClient
    from agentsudo_tokens.config import Settings
    from agentsudo_tokens.state import Store

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
    from agentsudo_tokens.state import default_store_url, open_store

    return open_store(default_store_url(current))


def when(seconds: float) -> str:
    """Epoch seconds as ``2025-01-31T12:00:00Z``."""
    from agentsudo_tokens.tokens.revocation import iso_time

    return iso_time(seconds)


_JTI = re.compile(r"[A-Za-z0-9_:~-]{16,256}")  # no ".": a dotted argument is a token


def _jti_of(target: str) -> str:
    """The ``jti`` a revocation names: the argument itself, or the given token's.

    :raises click.BadParameter: neither a decodable token with a ``jti`` nor a ``jti``.
    """
    from agentsudo_tokens.errors import MalformedTokenError
    from agentsudo_tokens.tokens.verifier import decode_unverified

    if "." in target:
        try:
            jti = decode_unverified(target).claims.get("jti")
        except MalformedTokenError as exc:
            raise click.BadParameter(f"not a token: {exc}", param_hint="JTI_OR_TOKEN") from None
        if not isinstance(jti, str) or not jti or len(jti) > 256 or not jti.isprintable():
            raise click.BadParameter("the token has no usable jti", param_hint="JTI_OR_TOKEN")
        return jti
    if target.startswith("eyJ"):  # base64url of '{"': a token's header, cut at its first dot
        raise click.BadParameter(
            "this looks like the first part of a token (cut at a dot?): pass the whole token",
            param_hint="JTI_OR_TOKEN",
        )
    if not _JTI.fullmatch(target):
        raise click.BadParameter(
            "expected a token or a jti (16 to 256 characters of A-Z a-z 0-9 - _ : ~), "
            f"found {len(target)} characters that are neither",
            param_hint="JTI_OR_TOKEN",
        )
    return target


def _verified_exp(token: str, current: Settings) -> int | None:
    """The token's ``exp`` if it verifies with the public keys here; else say so and ``None``.

    An unverified ``exp`` is not trusted: the revocation is then kept as long as
    for a ``jti`` alone.
    """
    from agentsudo_tokens.errors import (
        AgentSudoError,
        ExpiredTokenError,
        RevokedTokenError,
        StateRequiredError,
    )
    from agentsudo_tokens.tokens.verifier import Verifier

    try:
        return Verifier.from_settings(current, store=None).verify(token).expires_at
    except (ExpiredTokenError, RevokedTokenError, StateRequiredError):
        return None  # genuine, but its exp is past, or not to be read without a store
    except AgentSudoError as exc:
        click.echo(
            terminal_safe(
                f"agentsudo: note: the token does not verify here ({exc}); revoking its jti as "
                "written, kept for the maximum TTL"
            ),
            err=True,
        )
        return None


def _check_agent(name: str) -> None:
    from agentsudo_tokens.errors import ConfigError
    from agentsudo_tokens.tokens.claims import check_agent_name

    try:
        check_agent_name(name, "agent")
    except ConfigError as exc:
        raise click.BadParameter(str(exc), param_hint="--agent") from None


@click.command(context_settings=ID_ARGUMENT_COMMAND)  # a jti may start with "-"
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

    With AGENTSUDO_BROKER set, the broker records the revocation (admins only)
    and publishes it in its signed revocation list, which verifiers fetch.
    """
    if target is not None and target.startswith("--") and not _JTI.fullmatch(target):
        raise click.UsageError(f"no such option: {target}")  # a jti may start with "--" too
    if (target is None) == (agent is None):
        raise click.UsageError("give JTI_OR_TOKEN or --agent NAME (one of the two)")
    from agentsudo_tokens.tokens.revocation import revoke as revoke_jti
    from agentsudo_tokens.tokens.revocation import revoke_agent, revoke_token

    current = settings(keys_dir=keys_dir, store=store)
    client = broker_of(current, keys_dir=keys_dir, store=store)
    if target == "-":
        target = sys.stdin.readline(64 * 1024).strip()
        if not target:
            raise click.UsageError("empty input on stdin")
    jti = _jti_of(target) if target is not None else None  # garbage: exit 2, nothing recorded
    if agent is not None:
        _check_agent(agent)
    if client is not None:
        _revoke_by_broker(client, target, jti, agent, reason, as_json)
        return
    with open_cli_store(current) as state:
        if agent is not None:
            done = revoke_agent(
                state, agent, reason=reason, max_ttl=current.max_ttl, leeway=current.leeway
            )
        elif target is not None and "." in target:
            expires_at = _verified_exp(target, current)
            done = revoke_token(
                state, target, reason=reason, expires_at=expires_at, max_ttl=current.max_ttl
            )
        else:
            done = revoke_jti(state, str(jti), reason=reason, max_ttl=current.max_ttl)
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
        until = when(done.cutoff if done.cutoff is not None else done.revoked_at)
        what = f"every token of agent {done.target!r} issued until {until}"
    else:
        what = f"token {done.target!r}"
    click.echo(f"revoked: {what} (recorded in {where} until {when(done.kept_until)})")


def _revoke_by_broker(
    client: BrokerClient,
    target: str | None,
    jti: str | None,
    agent: str | None,
    reason: str | None,
    as_json: bool,
) -> None:
    """Ask the broker to revoke (it refuses a caller who is not an admin)."""
    if agent is not None:
        done = client.revoke(agent=agent, reason=reason)
    elif target is not None and "." in target:
        done = client.revoke(token=target, reason=reason)
    else:
        done = client.revoke(jti=jti, reason=reason)
    kind, revoked, kept_until = done.get("revoked"), done.get("target"), done.get("kept_until")
    if not isinstance(kept_until, int | float) or isinstance(kept_until, bool):
        from agentsudo_tokens.broker.client import BrokerUnavailableError

        raise BrokerUnavailableError(
            f"the broker at {client.address} answered without a revocation"
        )
    if as_json:
        payload = {
            "ok": True,
            "revoked": kind,
            "target": revoked,
            "reason": reason,
            "kept_until": kept_until,
            "broker": client.address,
        }
        click.echo(json.dumps(payload))
        return
    if kind == "agent":
        what = f"every token of agent {revoked!r} issued until now (and the leeway after)"
    else:
        what = f"token {revoked!r}"
    where = f"the broker at {client.address}"
    click.echo(terminal_safe(f"revoked: {what} (recorded by {where} until {when(kept_until)})"))
