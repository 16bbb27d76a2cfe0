"""``agentsudo run``: like sudo, run a command with a fresh token in its environment."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ._common import broker_of, keys_dir_option, scopes_from, settings
from .issue_cmd import agent_options, ask_broker, limit_options, limits_of, mint

if TYPE_CHECKING:
    from agentsudo_tokens.tokens.dpop import DPoPKey


@click.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@agent_options(
    agent_required=False,
    agent_help="The agent's name (the token's sub); inside an agent (AGENTSUDO_TOKEN and "
    "AGENTSUDO_BROKER set), the sub-agent's name [default: this agent's own].",
)
@click.option(
    "--dpop",
    is_flag=True,
    help="Bind the token to a key made now, in memory (DPoP, RFC 9449); the child gets the "
    "key through an inherited pipe (AGENTSUDO_DPOP_KEY_FD), never a file or a variable.",
)
@click.option(
    "--dpop-alg",
    type=click.Choice(["ES256", "EdDSA"]),
    default=None,
    help="The DPoP key's algorithm (implies --dpop) [default ES256].",
)
@limit_options
@keys_dir_option
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def run(
    agent: str | None,
    scopes: tuple[str, ...],
    ttl: int | None,
    aud: tuple[str, ...],
    dpop: bool,
    dpop_alg: str | None,
    limits: tuple[str, ...],
    budgets: tuple[str, ...],
    keys_dir: Path | None,
    command: tuple[str, ...],
) -> None:
    """Run COMMAND with AGENTSUDO_TOKEN set to a fresh token for the agent.

    \b
    agentsudo run --agent AnalyticsBot --scopes "read:*" -- python my_agent.py

    The token goes in the child's environment, never on its command line;
    AGENTSUDO_JWKS points the child at the public keys.

    With AGENTSUDO_BROKER set, the broker mints the token as its policy allows
    (--scopes and --ttl default to what it grants), and the child gets
    AGENTSUDO_TOKEN and AGENTSUDO_BROKER, where it finds the public keys and the
    revocation list; never a key directory, a store or a JWKS file path.

    \b
    Inside an agent (AGENTSUDO_TOKEN and AGENTSUDO_BROKER both set), the agent
    narrows its own token for the child by token exchange (RFC 8693):
      agentsudo run --scopes read:orders -- python summarizer.py
      agentsudo run --agent Summarizer --scopes read:orders --ttl 5m -- python s.py
    --scopes, --aud and --ttl default to the token's own (the scopes it may pass
    on; the TTL to the broker's, cut to the token's expiry); --agent names the
    sub-agent (default: the agent itself). Asking for more than the token holds,
    or than its policy lets it pass on, is refused in one line. Revoking the
    token revokes the child's. The child's exit status is passed through (128+N
    when a signal N ends it; 127 when COMMAND is not found, as in a shell).

    \b
    --limit 'write:refunds amount<=50' and --budget 'write:refunds amount=100'
    narrow the token as for `agentsudo issue`. Inside an agent, the child
    carries every limit of the agent's token that may apply to its scopes, plus
    these; a looser one is refused. Each budget of the token that may apply to
    the child's scopes needs a --budget for the child, which is carved out of
    what the token has left (its remainder drops by as much); asking more than
    is left is refused and nothing is taken.

    With --dpop the token is bound to a key pair made here, in memory: a copy of
    the token (a log, a service that saw it) is useless without the key. The
    child reads the private key once from the pipe AGENTSUDO_DPOP_KEY_FD names
    (agentsudo_tokens does it for httpx's AgentTokenAuth); its own children
    do not inherit it.
    """
    import signal
    import subprocess

    from agentsudo_tokens.config import child_environment

    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise click.UsageError("no COMMAND given after --")
    limited = limits_of(limits, budgets)  # a bad line is refused before anything else
    key = None
    if dpop or dpop_alg is not None:
        from agentsudo_tokens.tokens.dpop import DPoPKey

        key = DPoPKey.generate(dpop_alg or "ES256")
    current = settings(keys_dir=keys_dir)
    client = broker_of(current, keys_dir=keys_dir)
    if client is not None and current.token:  # inside an agent: narrow its own token
        from agentsudo_tokens.guard.delegation import exchange_token

        from .issue_cmd import audience_of

        if key is not None:
            raise click.UsageError(
                "--dpop inside an agent: a token made by exchange is not bound to a key yet; "
                "run the sub-agent without --dpop, or from outside an agent"
            )
        asked = scopes_from(scopes) if scopes else None
        token = exchange_token(
            current.token, "this agent", agent, scopes=asked, ttl=ttl, audience=audience_of(aud),
            broker=client, limits=limits, budgets=budgets,
        )  # fmt: skip
        env = child_environment(token, broker=client.address)
    elif agent is None:
        ctx = click.get_current_context()
        param = next(p for p in ctx.command.params if p.name == "agent")
        raise click.MissingParameter(ctx=ctx, param=param)
    elif client is not None:
        token = ask_broker(
            client, agent, scopes, ttl, aud, dpop_key=key, limits=limits, budgets=budgets
        )["token"]
        env = child_environment(str(token), broker=client.address)
    else:
        minted = mint(
            agent, scopes, ttl, aud, keys_dir, jkt=key.jkt if key else None, limits=limited
        )
        from agentsudo_tokens.state import default_store_url

        store = default_store_url(current)  # so the child sees revocations from any directory
        env = child_environment(minted.token, jwks=str(current.jwks_source), store=store)
    inherited = () if key is None else (_key_pipe(key, env),)
    try:
        child = subprocess.Popen(list(command), env=env, pass_fds=inherited)
    except FileNotFoundError:
        click.echo(f"agentsudo: command not found: {command[0]}", err=True)
        raise SystemExit(127) from None
    except PermissionError:
        click.echo(f"agentsudo: cannot execute: {command[0]}", err=True)
        raise SystemExit(126) from None
    finally:
        for fd in inherited:
            os.close(fd)  # the child holds its own copy of the pipe
    # Ctrl-C reaches the child (same process group); we wait for it to decide, like sudo.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        code = child.wait()
    finally:
        signal.signal(signal.SIGINT, previous)
    raise SystemExit(128 - code if code < 0 else code)


def _key_pipe(key: DPoPKey, env: dict[str, str]) -> int:
    """A pipe holding ``key`` as a private JWK, its writing end closed; its reading end's
    number and the pipe's inode go in ``env`` (``AGENTSUDO_DPOP_KEY_FD=FD:INODE``) for the
    child to read once."""
    import json

    from agentsudo_tokens.config import DPOP_KEY_FD

    reading, writing = os.pipe()
    try:
        os.write(writing, json.dumps(key.to_private_jwk()).encode())  # < PIPE_BUF: one write
    finally:
        os.close(writing)
    env[DPOP_KEY_FD] = f"{reading}:{os.fstat(reading).st_ino}"
    return reading
