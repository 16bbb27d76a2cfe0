"""``agentsudo run``: like sudo, run a command with a fresh token in its environment."""

from __future__ import annotations

from pathlib import Path

import click

from ._common import broker_of, keys_dir_option, scopes_from, settings
from .issue_cmd import agent_options, ask_broker, mint


@click.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@agent_options(
    agent_required=False,
    agent_help="The agent's name (the token's sub); inside an agent (AGENTSUDO_TOKEN and "
    "AGENTSUDO_BROKER set), the sub-agent's name [default: this agent's own].",
)
@keys_dir_option
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def run(
    agent: str | None,
    scopes: tuple[str, ...],
    ttl: int | None,
    aud: tuple[str, ...],
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
    --scopes, --aud and --ttl default to the token's own (the TTL to the broker's,
    cut to the token's expiry); --agent names the sub-agent (default: the agent
    itself). Asking for more than the token holds, or than its policy lets it pass
    on, is refused in one line. Revoking the token revokes the child's. The child's exit
    status is passed through (128+N when a signal N ends it; 127 when COMMAND
    is not found, as in a shell).
    """
    import signal
    import subprocess

    from agentsudo_tokens.config import child_environment

    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise click.UsageError("no COMMAND given after --")
    current = settings(keys_dir=keys_dir)
    client = broker_of(current, keys_dir=keys_dir)
    if client is not None and current.token:  # inside an agent: narrow its own token
        from agentsudo_tokens.guard.delegation import exchange_token

        from .issue_cmd import audience_of

        asked = scopes_from(scopes) if scopes else None
        token = exchange_token(
            current.token, "this agent", agent, scopes=asked, ttl=ttl, audience=audience_of(aud),
            broker=client,
        )  # fmt: skip
        env = child_environment(token, broker=client.address)
    elif agent is None:
        ctx = click.get_current_context()
        param = next(p for p in ctx.command.params if p.name == "agent")
        raise click.MissingParameter(ctx=ctx, param=param)
    elif client is not None:
        token = ask_broker(client, agent, scopes, ttl, aud)["token"]
        env = child_environment(str(token), broker=client.address)
    else:
        minted = mint(agent, scopes, ttl, aud, keys_dir)
        from agentsudo_tokens.state import default_store_url

        store = default_store_url(current)  # so the child sees revocations from any directory
        env = child_environment(minted.token, jwks=str(current.jwks_source), store=store)
    try:
        child = subprocess.Popen(list(command), env=env)
    except FileNotFoundError:
        click.echo(f"agentsudo: command not found: {command[0]}", err=True)
        raise SystemExit(127) from None
    except PermissionError:
        click.echo(f"agentsudo: cannot execute: {command[0]}", err=True)
        raise SystemExit(126) from None
    # Ctrl-C reaches the child (same process group); we wait for it to decide, like sudo.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        code = child.wait()
    finally:
        signal.signal(signal.SIGINT, previous)
    raise SystemExit(128 - code if code < 0 else code)
