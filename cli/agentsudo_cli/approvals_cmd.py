"""``agentsudo approvals``, ``approve ID``, ``deny ID``: answer agents waiting on ``@sudo``.

$ agentsudo approvals
apr_Q2xV...  SupportBot  write:refunds  process_refund(order_id='o1', amount=5000)  4m 51s left
$ agentsudo approve apr_Q2xV...      # that one call proceeds, once
$ agentsudo deny apr_Q2xV... --reason "too large"
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from ._common import describe_remaining, json_option, keys_dir_option, settings
from .revoke_cmd import open_cli_store, store_option


def _who() -> str | None:
    import getpass

    try:
        return getpass.getuser()
    except Exception:  # no user name to record: the answer still counts
        return None


@click.command()
@store_option
@json_option
@keys_dir_option
def approvals(store: str | None, as_json: bool, keys_dir: Path | None) -> None:
    """List the calls waiting for a human's answer (agent, scope, function, arguments)."""
    from agentsudo_tokens.approvals import pending

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
        left = describe_remaining(request.expires_at - now)
        click.echo(f"{request.id}  {request.agent}  {request.scope}  {request.call()}  {left} left")


def _answered(verb: str, request: object, as_json: bool) -> None:
    from agentsudo_tokens.approvals import ApprovalRequest

    assert isinstance(request, ApprovalRequest)
    if as_json:
        click.echo(json.dumps({"ok": True, "answer": verb, "request": request.to_dict()}))
    else:
        click.echo(f"{verb}: {request.id}: {request.describe()}")


@click.command()
@click.argument("request_id", metavar="ID")
@store_option
@json_option
@keys_dir_option
def approve(request_id: str, store: str | None, as_json: bool, keys_dir: Path | None) -> None:
    """Approve request ID: that one call proceeds, once."""
    from agentsudo_tokens.approvals import approve as approve_request

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
    from agentsudo_tokens.approvals import deny as deny_request

    with open_cli_store(settings(keys_dir=keys_dir, store=store)) as state:
        request = deny_request(state, request_id, by=_who(), reason=reason)
    _answered("denied", request, as_json)
