"""``agentsudo budget show``: what each budget of a token has left.

    $ agentsudo budget show "$TOKEN"          # its budgets, as the token sets them
    write:refunds (entry 0): amount 450 of 500 left, 19 of 20 calls left
    $ agentsudo budget show 3q2-Vx...         # a jti: the entries the store holds for it
    $ agentsudo budget show "$TOKEN" --json

Budgets are kept in the state store (``--store``, ``AGENTSUDO_STORE``, default
the key directory's ``agentsudo-state.db``), as ``revoke`` finds it. With a
token, every budgeted entry is shown, spent or not; with a bare ``jti``, only
the entries something was spent on (the store does not know the others). With
``AGENTSUDO_BROKER`` set, the broker keeps them and is asked (a token as its holder, a
jti as an admin).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ._common import (
    ID_ARGUMENT_COMMAND,
    broker_of,
    json_option,
    keys_dir_option,
    settings,
    terminal_safe,
)
from .revoke_cmd import _jti_of, open_cli_store, store_option

if TYPE_CHECKING:
    from agentsudo_tokens.state.budgets import Balance
    from agentsudo_tokens.tokens.limits import Limits


def _counters(limits: dict[str, int], spent: dict[str, int]) -> dict[str, dict[str, str]]:
    from agentsudo_tokens.tokens.limit_entry import counter_figure  # a value, not millionths

    return {
        counter.removeprefix("sum:"): {
            "limit": counter_figure(counter, limit),
            "spent": counter_figure(counter, spent.get(counter, 0)),
            "left": counter_figure(counter, max(0, limit - spent.get(counter, 0))),
        }
        for counter, limit in sorted(limits.items(), key=lambda item: item[0] == "calls")
    }


def _limits_of(token: str) -> tuple[str, Limits | None]:
    """The jti and limits a token carries (read, not verified: this only reports).

    :raises click.BadParameter: not a token, or its limits are malformed.
    """
    from agentsudo_tokens.errors import InvalidLimitError, MalformedTokenError
    from agentsudo_tokens.tokens.limits import LIMITS_CLAIM, Limits
    from agentsudo_tokens.tokens.verifier import decode_unverified

    jti = _jti_of(token)
    try:
        claims = decode_unverified(token).claims
        raw = claims.get(LIMITS_CLAIM)
        return jti, None if raw is None else Limits.from_claim(raw)
    except (MalformedTokenError, InvalidLimitError) as exc:
        raise click.BadParameter(
            f"not a token with limits: {exc}", param_hint="TOKEN_OR_JTI"
        ) from None


def _target(target: str) -> tuple[str, Limits | None]:
    """The jti and limits ``TOKEN_OR_JTI`` names (a bare jti: no limits known).

    :raises ConfigError: neither a token with a usable jti nor a jti (one line, exit 2).
    """
    from agentsudo_tokens.errors import ConfigError

    try:
        return _limits_of(target) if "." in target else (_jti_of(target), None)
    except click.BadParameter as exc:
        raise ConfigError(f"TOKEN_OR_JTI: {exc.message}") from None


def _rows(
    limits: Limits | None, balances: dict[str, Balance], *, token: bool
) -> list[dict[str, Any]]:
    """A token's budgets (every one it carries); a bare jti's, as the store holds them."""
    rows = []
    if token:
        for entry_id, entry in limits.budgeted if limits is not None else ():
            assert entry.budget is not None
            balance = balances.get(entry_id)
            counters = entry.budget.counters()
            spent = balance.spent if balance is not None else {}
            rows.append({"entry": entry_id, "scope": entry.scope, **_as_counters(counters, spent)})
        return rows
    for entry_id, balance in sorted(balances.items()):
        rows.append(
            {"entry": entry_id, "scope": None, **_as_counters(balance.limits, balance.spent)}
        )
    return rows


def _as_counters(limits: dict[str, int], spent: dict[str, int]) -> dict[str, Any]:
    return {"counters": _counters(limits, spent)}


def _line(row: dict[str, Any]) -> str:
    parts = []
    for name, counter in row["counters"].items():
        if name == "calls":
            parts.append(f"{counter['left']} of {counter['limit']} calls left")
        else:
            parts.append(f"{name} {counter['left']} of {counter['limit']} left")
    where = f"{row['scope']} (entry {row['entry']})" if row["scope"] else f"entry {row['entry']}"
    return f"  {where}: {', '.join(parts)}"


@click.group()
def budget() -> None:
    """Show the budgets of a token: what each has left."""


@budget.command(context_settings=ID_ARGUMENT_COMMAND)  # a jti may start with "-"
@click.argument("target", metavar="TOKEN_OR_JTI")
@store_option
@json_option
@keys_dir_option
def show(target: str, store: str | None, as_json: bool, keys_dir: Path | None) -> None:
    """What each budget of a token (or of a jti, in the store) has left."""
    current = settings(keys_dir=keys_dir, store=store)
    client = broker_of(current, keys_dir=keys_dir, store=store)
    token = "." in target
    jti, limits = _target(target)
    if client is not None:  # the broker keeps them: a token asks as its holder, a jti as admin
        balances = client.budgets(target)
        where = f"broker {client.address}"
    else:
        from agentsudo_tokens.errors import ConfigError
        from agentsudo_tokens.state.budgets import Budgets

        with open_cli_store(current) as state:
            try:
                balances = Budgets(state).balances(jti)
            except ValueError as exc:  # a jti the store cannot hold (a ':', not ASCII, ...)
                raise ConfigError(f"TOKEN_OR_JTI: {exc}") from None
            where = state.url
    rows = _rows(limits, balances, token=token)
    if as_json:
        click.echo(json.dumps({"ok": True, "jti": jti, "budgets": rows, "store": where}))
        return
    if not rows:
        what = "the token has no budgets" if token else "nothing spent is recorded"
        click.echo(terminal_safe(f"jti {jti}: {what} (store {where})"))
        return
    click.echo(terminal_safe(f"jti {jti} (store {where}):"))
    for row in rows:
        click.echo(terminal_safe(_line(row)))
