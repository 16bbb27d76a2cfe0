"""``agentsudo inspect``: decode a token WITHOUT verifying it, said plainly."""

from __future__ import annotations

import json
import time

import click

from ._common import describe_remaining, read_token, settings


@click.command("inspect")
@click.argument("token", required=False)
def inspect_token(token: str | None) -> None:
    """Show TOKEN's header and claims, unverified (or '-' for stdin, or AGENTSUDO_TOKEN).

    Anyone can write these claims; only 'agentsudo verify' says whether they hold.
    """
    from agentsudo_tokens.tokens.verifier import decode_unverified

    decoded = decode_unverified(read_token(token, settings()))
    claims = dict(decoded.claims)
    click.echo(
        "agentsudo: NOT VERIFIED: decoded only; use 'agentsudo verify' to check it", err=True
    )
    exp = claims.get("exp")
    result = {"verified": False, "header": dict(decoded.header), "claims": claims}
    if type(exp) is int:
        left = exp - time.time()
        result["expires"] = f"in {describe_remaining(left)}" if left > 0 else "expired"
    # ensure_ascii: every control, non-ASCII or look-alike character in a claim prints as \uXXXX
    click.echo(json.dumps(result, indent=2, ensure_ascii=True))
