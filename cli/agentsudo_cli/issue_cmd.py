"""``agentsudo issue``: mint a token; the token alone goes to stdout."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ._common import broker_of, duration, json_option, keys_dir_option, scopes_from, settings
from .revoke_cmd import open_cli_store, store_option

if TYPE_CHECKING:
    from agentsudo_tokens.broker.client import BrokerClient
    from agentsudo_tokens.tokens.dpop import DPoPKey
    from agentsudo_tokens.tokens.issuer import IssuedToken
    from agentsudo_tokens.tokens.limits import Limits


def agent_options(
    func: Any = None, *, agent_required: bool = True, agent_help: str | None = None
) -> Any:
    """--agent, --scopes, --ttl, --aud: what a token says (``agent_required=False``: for
    ``run``, where inside an agent --agent names the sub-agent and may be left out)."""
    if func is None:
        return lambda f: agent_options(f, agent_required=agent_required, agent_help=agent_help)
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
        help="Scopes, space- or comma-separated, or repeated "
        "[required without a broker; with one, default: what the policy grants].",
    )(func)
    return click.option(
        "--agent", required=agent_required, help=agent_help or "The agent's name (the token's sub)."
    )(func)


def limit_options(func: Any) -> Any:
    """--limit and --budget: constraints on arguments and budgets the token carries."""
    func = click.option(
        "--budget",
        "budgets",
        multiple=True,
        metavar="'SCOPE NAME=N calls=N'",
        help="A budget for the token's lifetime (repeatable): 'write:refunds amount=500 calls=20'.",
    )(func)
    return click.option(
        "--limit",
        "limits",
        multiple=True,
        metavar="'SCOPE CONSTRAINT...'",
        help="Constraints on a scope's arguments (repeatable): "
        "'write:refunds amount<=100 currency in USD,EUR'.",
    )(func)


def limits_of(limits: tuple[str, ...], budgets: tuple[str, ...]) -> Limits | None:
    """The ``--limit``/``--budget`` lines as ``Limits``; ``None`` when neither is given.

    :raises InvalidLimitError: a line outside the grammar (exit 2, one line).
    """
    if not limits and not budgets:
        return None
    from agentsudo_tokens.tokens.limits import Limits

    return Limits.parse(limits, budgets=budgets)


def require_scopes(scopes: tuple[str, ...]) -> None:
    """Without a broker, ``--scopes`` is required (with one, the policy decides)."""
    if not scopes:
        ctx = click.get_current_context()
        param = next(p for p in ctx.command.params if p.name == "scopes")
        raise click.MissingParameter(ctx=ctx, param=param)


def audience_of(aud: tuple[str, ...]) -> str | list[str] | None:
    """``--aud`` given once, several times, or not at all."""
    return list(aud) if len(aud) > 1 else (aud[0] if aud else None)


def ask_broker(
    client: BrokerClient,
    agent: str,
    scopes: tuple[str, ...],
    ttl: int | None,
    aud: tuple[str, ...],
    *,
    once: bool = False,
    dpop_key: DPoPKey | None = None,
    limits: tuple[str, ...] = (),
    budgets: tuple[str, ...] = (),
) -> dict[str, Any]:
    """A token from the broker, as its policy allows this caller (scopes and TTL by
    default the policy's); the broker's answer, with a ``token`` in it. With
    ``dpop_key``, the token is bound to that key (a DPoP proof goes with the request).
    ``limits`` and ``budgets`` (grammar lines) are added to the policy's."""
    granted = scopes_from(scopes) if scopes else None
    if granted is not None and "**" in granted:
        click.echo("agentsudo: warning: scope '**' grants EVERYTHING", err=True)
    answer = client.issue(
        agent,
        scopes=granted,
        ttl=ttl,
        audience=audience_of(aud),
        once=once,
        dpop_key=dpop_key,
        limits=list(limits) or None,
        budgets=list(budgets) or None,
    )
    token = answer.get("token")
    if not isinstance(token, str) or not token:
        from agentsudo_tokens.broker.client import BrokerUnavailableError

        raise BrokerUnavailableError(f"the broker at {client.address} answered without a token")
    return answer


def mint(
    agent: str,
    scopes: tuple[str, ...],
    ttl: int | None,
    aud: tuple[str, ...],
    keys_dir: Path | None,
    *,
    once: bool = False,
    jkt: str | None = None,
    limits: Limits | None = None,
) -> IssuedToken:
    """Mint with the key directory's active key (bound to the key ``jkt`` when given);
    warn on stderr about `**`."""
    from agentsudo_tokens.tokens.issuer import Issuer

    require_scopes(scopes)
    granted = scopes_from(scopes)
    if "**" in granted:
        click.echo("agentsudo: warning: scope '**' grants EVERYTHING", err=True)
    issuer = Issuer.from_settings(settings(keys_dir=keys_dir, ttl=ttl))  # the flag beats the env
    return issuer.issue(
        agent, granted, ttl=ttl, audience=audience_of(aud), once=once, jkt=jkt, limits=limits
    )


@click.command()
@agent_options
@click.option(
    "--once", is_flag=True, help="One-time: the first verification with the store consumes it."
)
@click.option(
    "--dpop-jkt",
    "jkt",
    default=None,
    metavar="THUMBPRINT",
    help="Bind the token to the key with this RFC 7638 thumbprint (DPoP, RFC 9449): "
    "services then accept it only with proofs signed by that key. Without a broker.",
)
@limit_options
@store_option
@json_option
@keys_dir_option
def issue(
    agent: str,
    scopes: tuple[str, ...],
    ttl: int | None,
    aud: tuple[str, ...],
    once: bool,
    jkt: str | None,
    limits: tuple[str, ...],
    budgets: tuple[str, ...],
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

    With AGENTSUDO_BROKER set, the broker mints the token as its policy allows
    you (no key directory here): --scopes and --ttl default to what the policy
    grants; a request beyond it is refused in one line.

    \b
    --limit 'write:refunds amount<=100 currency in USD,EUR'
    --budget 'write:refunds amount=500 calls=20'
    put limits on a scope's arguments, checked by every guard, and budgets
    debited in the state store (README: "Limits and budgets"). With a broker,
    they are added to those its policy sets for the agent (narrower only: a
    looser bound or a larger budget than the policy's is refused).
    """
    limited = limits_of(limits, budgets)  # a bad line is refused before anything else
    client = broker_of(settings(), keys_dir=keys_dir, store=store)
    if client is not None:
        if jkt is not None:
            raise click.UsageError(
                "--dpop-jkt: a broker binds a token only to a key the caller proves it holds "
                "(a DPoP proof): use `agentsudo run --dpop` or BrokerClient.issue(dpop_key=...)"
            )
        _issue_by_broker(
            client, agent, scopes, ttl, aud, once=once, as_json=as_json, limits=limits,
            budgets=budgets,
        )  # fmt: skip
        return
    minted = mint(agent, scopes, ttl, aud, keys_dir, once=once, jkt=jkt, limits=limited)
    if once:
        from agentsudo_tokens.state.onetime import mark_one_time

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


def _issue_by_broker(
    client: BrokerClient,
    agent: str,
    scopes: tuple[str, ...],
    ttl: int | None,
    aud: tuple[str, ...],
    *,
    once: bool,
    as_json: bool,
    limits: tuple[str, ...] = (),
    budgets: tuple[str, ...] = (),
) -> None:
    answer = ask_broker(client, agent, scopes, ttl, aud, once=once, limits=limits, budgets=budgets)
    token = str(answer["token"])
    if not as_json:
        click.echo(token)
        return
    from agentsudo_tokens.tokens.verifier import decode_unverified

    decoded = decode_unverified(token)  # as minted by the broker: `agentsudo verify` checks it
    payload: dict[str, Any] = {
        "token": token,
        "header": dict(decoded.header),
        "claims": dict(decoded.claims),
        "broker": client.address,
    }
    if once:
        payload["once"] = True
    click.echo(json.dumps(payload, indent=2))
