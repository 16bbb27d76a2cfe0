"""``agentsudo approvals [show ID]``, ``approve ID``, ``deny ID``: answer agents waiting.

$ agentsudo approvals
apr_Q2xV...  SupportBot  write:refunds  process_refund(amount=5000, order_id="o1")  4m 51s left
apr_Z9kP...  Orchestrator>Summarizer  read:secrets  fetch(id="s1")  2m 03s left
$ agentsudo approvals show apr_Q2xV...   # everything, the arguments whole
$ agentsudo approve apr_Q2xV...          # that one call proceeds, once
$ agentsudo deny apr_Q2xV... --reason "too large"

With AGENTSUDO_BROKER set, the requests are the broker's and only its admins
see and answer them; the broker records who answered (the caller's uid or
credential). The list cuts a long call and says so ("... (shortened; agentsudo approvals
show ID)"); ``show`` never cuts. Everything printed is passed through
``terminal_safe``: a name or an argument cannot forge a row or drive the
terminal. A sub-agent's request shows its chain, root agent first
(``Orchestrator>Summarizer`` in the list, a ``chain`` line in ``show``); a
request stored before chains were kept shows its agent alone.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ._common import (
    broker_of,
    describe_remaining,
    json_option,
    keys_dir_option,
    settings,
    terminal_safe,
)
from .revoke_cmd import open_cli_store, store_option, when

if TYPE_CHECKING:
    from agentsudo_tokens.state.approvals import ApprovalRequest

LISTED = 120  # characters of a call shown in the list; `approvals show ID` shows it whole
NAME = 40  # characters of an agent name or scope shown in the list


def _who() -> str | None:
    import getpass

    try:
        return getpass.getuser()
    except Exception:  # no user name to record: the answer still counts
        return None


def _cut(text: str, limit: int, request_id: str) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... (shortened; agentsudo approvals show {request_id})"


def _row(request: ApprovalRequest, now: float) -> str:
    left = describe_remaining(request.expires_at - now)
    who = ">".join(request.chain) if request.delegated else request.agent  # root>...>agent
    agent = _cut(who, NAME if not request.delegated else 2 * NAME, request.id)
    scope = _cut(request.scope, NAME, request.id)
    return terminal_safe(f"{request.id}  {agent}  {scope}  {request.call(LISTED)}  {left} left")


@click.group(invoke_without_command=True)
@store_option
@json_option
@keys_dir_option
@click.pass_context
def approvals(ctx: click.Context, store: str | None, as_json: bool, keys_dir: Path | None) -> None:
    """List the calls waiting for a human's answer (agent, scope, function, arguments).

    A long call is cut in the list, which says so; 'agentsudo approvals show ID'
    prints one request whole.
    """
    if ctx.invoked_subcommand is not None:
        return
    from agentsudo_tokens.state.approvals import pending

    client = broker_of(settings(), keys_dir=keys_dir, store=store)
    if client is not None:
        waiting = client.approvals()
    else:
        with open_cli_store(settings(keys_dir=keys_dir, store=store)) as state:
            waiting = pending(state)
    if as_json:
        click.echo(json.dumps([request.to_dict() for request in waiting]))
        return
    if not waiting:
        click.echo("agentsudo: no approval requests are waiting", err=True)
        return
    now = time.time()
    for request in waiting:
        click.echo(_row(request, now))


@approvals.command("show")
@click.argument("request_id", metavar="ID")
@store_option
@json_option
@keys_dir_option
def show(request_id: str, store: str | None, as_json: bool, keys_dir: Path | None) -> None:
    """Show request ID whole: who asks, for what, and every argument, uncut.

    The arguments are the canonical JSON the approval is bound to: what runs if
    you approve is exactly what is shown (non-ASCII as \\u escapes, so look-alike
    letters cannot hide). A value JSON lacks shows as its type and repr.
    """
    from agentsudo_tokens.state.approvals import lookup

    client = broker_of(settings(), keys_dir=keys_dir, store=store)
    if client is not None:
        request = client.approval(request_id)
    else:
        with open_cli_store(settings(keys_dir=keys_dir, store=store)) as state:
            request = lookup(state, request_id)
    if as_json:
        click.echo(json.dumps(request.to_dict() | {"arguments_json": request.arguments_json}))
        return
    left = describe_remaining(request.expires_at - time.time())
    lines = [
        f"request    {request.id}",
        f"agent      {request.agent}",
        *([f"chain      {' > '.join(request.chain)}"] if request.delegated else []),
        f"token jti  {request.jti if request.jti is not None else '- (unsigned session)'}",
        f"scope      {request.scope}",
        f"function   {request.function}",
        f"reason     {request.reason}",
        f"asked at   {when(request.created_at)}",
        f"expires    {when(request.expires_at)} ({left} left)",
        f"arguments  {len(request.arguments_json)} bytes of canonical JSON, "
        f"sha256 {request.arguments_sha256}",
    ]
    lines += [f"  {name} = {value}" for name, value in request.arguments.items()]
    for line in lines:
        click.echo(terminal_safe(line))
    click.echo(
        terminal_safe(
            f"answer with: agentsudo approve {request.id}  |  agentsudo deny {request.id}"
        ),
        err=True,
    )


def _answered(verb: str, request: ApprovalRequest, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps({"ok": True, "answer": verb, "request": request.to_dict()}))
    else:
        click.echo(terminal_safe(f"{verb}: {request.id}: {request.describe(LISTED)}"))


@click.command()
@click.argument("request_id", metavar="ID")
@store_option
@json_option
@keys_dir_option
def approve(request_id: str, store: str | None, as_json: bool, keys_dir: Path | None) -> None:
    """Approve request ID: that one call proceeds, once.

    Read it whole first: agentsudo approvals show ID.
    """
    from agentsudo_tokens.state.approvals import approve as approve_request

    client = broker_of(settings(), keys_dir=keys_dir, store=store)
    if client is not None:  # the broker records who asks: the caller it knows
        request = client.approve(request_id)
    else:
        with open_cli_store(settings(keys_dir=keys_dir, store=store)) as state:
            request = approve_request(state, request_id, by=_who())
    _answered("approved", request, as_json)


@click.command()
@click.argument("request_id", metavar="ID")
@click.option("--reason", default=None, help="Why; the waiting call's error says it.")
@store_option
@json_option
@keys_dir_option
def deny(
    request_id: str, reason: str | None, store: str | None, as_json: bool, keys_dir: Path | None
) -> None:
    """Deny request ID: the waiting call raises PermissionDeniedError."""
    from agentsudo_tokens.state.approvals import deny as deny_request

    client = broker_of(settings(), keys_dir=keys_dir, store=store)
    if client is not None:
        request = client.deny(request_id, reason=reason)
    else:
        with open_cli_store(settings(keys_dir=keys_dir, store=store)) as state:
            request = deny_request(state, request_id, by=_who(), reason=reason)
    _answered("denied", request, as_json)
