"""``agentsudo verify``: check a token offline, optionally for scopes."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from ._common import (
    describe_remaining,
    json_option,
    keys_dir_option,
    read_token,
    settings,
    terminal_safe,
)


@click.command()
@click.argument("token", required=False)
@click.option(
    "--scope", "required", multiple=True, help="A scope the token must allow (repeatable)."
)
@click.option("--aud", default=None, help="Audience to expect [env AGENTSUDO_AUDIENCE].")
@click.option("--jwks", default=None, help="Public keys: a JWKS file [env AGENTSUDO_JWKS].")
@json_option
@keys_dir_option
def verify(
    token: str | None,
    required: tuple[str, ...],
    aud: str | None,
    jwks: str | None,
    as_json: bool,
    keys_dir: Path | None,
) -> None:
    """Verify TOKEN (or '-' for stdin, or AGENTSUDO_TOKEN) and any --scope.

    Exit 0 when valid and every --scope is allowed; 1 otherwise, with the reason.
    """
    from agentsudo_tokens.errors import PermissionDeniedError
    from agentsudo_tokens.tokens.scopes import validate_required_scope
    from agentsudo_tokens.tokens.verifier import Verifier

    current = settings(keys_dir=keys_dir, jwks=jwks, audience=aud)
    for scope in required:
        validate_required_scope(scope)
    presented = read_token(token, current)
    claims = Verifier.from_settings(current).verify(presented)
    for scope in required:
        if not claims.scopes.allows(scope):
            raise PermissionDeniedError(
                f"denied: agent {claims.agent!r} lacks scope {scope!r}",
                agent=claims.agent,
                scope=scope,
            )
    if as_json:
        result = {
            "ok": True,
            "agent": claims.agent,
            "chain": list(claims.chain),
            "scopes": list(claims.scopes.scopes),
            "audience": list(claims.audience),
            "issuer": claims.issuer,
            "expires_at": claims.expires_at,
            "jti": claims.jti,
            "kid": claims.kid,
            "allowed": list(required),
        }
        if claims.limits is not None:
            result["limits"] = [entry.text() for entry in claims.limits if entry.constraints]
            result["budgets"] = [
                f"{entry.scope} {entry.budget.text()}"
                for _, entry in claims.limits.budgeted
                if entry.budget is not None
            ]
        click.echo(json.dumps(result))
        return
    remaining = describe_remaining(claims.expires_at - time.time())
    allowed = f"; allows {', '.join(required)}" if required else ""
    chain = claims.chain
    by = f" (delegated: {' > '.join(chain)})" if len(chain) > 1 else ""
    click.echo(
        f"valid: agent {terminal_safe(repr(claims.agent))}{terminal_safe(by)}, scopes "
        f"{claims.scopes.claim()}, expires in {remaining}{allowed}"
    )
    for entry in claims.limits or ():
        if entry.constraints:
            click.echo(f"  limit  {terminal_safe(entry.text())}")
        if entry.budget is not None:
            click.echo(f"  budget {terminal_safe(entry.scope + ' ' + entry.budget.text())}")
