"""``agentsudo serve``: the broker, which alone holds the key, the policy and the state.

    $ agentsudo serve --policy agentsudo.toml --keys-dir /var/lib/agentsudo/keys \\
          --socket /run/agentsudo/broker.sock
"""

from __future__ import annotations

import math
from pathlib import Path

import click

from agentsudo_tokens.broker.ratelimit import ISSUE_BURST, ISSUE_RATE

from ._common import keys_dir_option, settings
from .revoke_cmd import store_option


def _rate(ctx: click.Context, param: click.Parameter, value: str) -> float:
    """``--issue-rate``: a finite number above 0 (a limit is never off).

    :raises ConfigError: anything else (one line, exit status 2).
    """
    from agentsudo_tokens.broker.ratelimit import MAX_RATE, MIN_RATE
    from agentsudo_tokens.errors import ConfigError

    try:
        rate = float(value) if value.isascii() else math.nan
    except ValueError:
        rate = math.nan
    if not (math.isfinite(rate) and MIN_RATE <= rate <= MAX_RATE):
        raise ConfigError(
            f"--issue-rate: expected {MIN_RATE:g} to {MAX_RATE:g} requests a second "
            f"(never off), found {value!r}"
        )
    return rate


def _public_url(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    try:
        from agentsudo_tokens.broker.console.state import public_origin
    except ImportError:
        return value  # serve says which package it needs
    from agentsudo_tokens.errors import ConfigError

    try:
        return public_origin(value)
    except ConfigError as exc:
        raise click.BadParameter(str(exc).removeprefix("expected --public-url as ")) from None


def _burst(ctx: click.Context, param: click.Parameter, value: str) -> int:
    """``--issue-burst``: a whole number of at least 1.

    :raises ConfigError: anything else (one line, exit status 2).
    """
    from agentsudo_tokens.broker.ratelimit import MAX_BURST
    from agentsudo_tokens.errors import ConfigError

    text = value.strip()
    if not (text.isascii() and text.isdigit() and len(text) <= 10 and 1 <= int(text) <= MAX_BURST):
        raise ConfigError(
            f"--issue-burst: expected a whole number from 1 to {MAX_BURST}, found {value!r}"
        )
    return int(text)


@click.command()
@click.option(
    "--policy",
    "policy",
    default=None,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The policy file (agentsudo.toml): who may obtain which agent's tokens.",
)
@click.option(
    "--dev",
    is_flag=True,
    help="No policy file: this user may obtain any agent's tokens, as dev mode allows "
    "(socket: <keys-dir>/broker.sock unless --socket).",
)
@click.option(
    "--socket",
    "socket_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Listen on this Unix socket (callers known by their uid).",
)
@click.option(
    "--listen",
    default=None,
    metavar="HOST:PORT",
    help="Also listen on TCP (callers present a credential the broker issued).",
)
@click.option("--socket-group", default=None, help="Make the socket 0660 and owned by this group.")
@click.option(
    "--audit-log",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The broker's hash-chained audit, its head signed [default: "
    "<keys-dir>/broker-audit.jsonl]; check it with agentsudo audit verify.",
)
@click.option(
    "--header-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=10.0,
    show_default=True,
    metavar="SECONDS",
    help="Close a connection that has not sent a whole request head this long after "
    "connecting (or after its previous answer).",
)
@click.option(
    "--peer-connections",
    type=click.IntRange(min=1),
    default=16,
    show_default=True,
    help="Connections one caller may hold at once (one uid on the socket, one address on "
    "TCP); more are answered 429 and closed.",
)
@click.option(
    "--tcp-connections",
    type=click.IntRange(min=1, max=1024),
    default=512,
    show_default=True,
    help="TCP connections all callers together may hold at once; more are answered 503 "
    "and closed, so callers on the socket always have room.",
)
@click.option(
    "--issue-rate",
    default=f"{ISSUE_RATE:g}",
    show_default=True,
    callback=_rate,
    metavar="N",
    help="Requests a second one caller may make, sustained, for tokens, and apart for "
    "elevation requests (a uid on the socket; a credential, or an elevation's agent, on "
    "TCP); beyond, 429 with Retry-After. Never off.",
)
@click.option(
    "--issue-burst",
    default=str(ISSUE_BURST),
    show_default=True,
    callback=_burst,
    metavar="N",
    help="Requests one caller may make at once before --issue-rate applies.",
)
@click.option(
    "--public-url",
    default=None,
    callback=_public_url,
    metavar="URL",
    help="The console's origin as browsers reach it through a TLS reverse proxy, e.g. "
    "https://console.example.com: its login links start with it, its forms must come "
    "from it, and with https its session cookie is Secure.",
)
@keys_dir_option
@store_option
def serve(
    policy: Path | None,
    dev: bool,
    socket_path: Path | None,
    listen: str | None,
    socket_group: str | None,
    audit_log: Path | None,
    header_timeout: float,
    peer_connections: int,
    tcp_connections: int,
    issue_rate: float,
    issue_burst: int,
    public_url: str | None,
    keys_dir: Path | None,
    store: str | None,
) -> None:
    """Serve the broker until SIGTERM; SIGHUP reloads the policy.

    \b
    agentsudo serve --policy agentsudo.toml --keys-dir /var/lib/agentsudo/keys \\
        --socket /run/agentsudo/broker.sock
    export AGENTSUDO_BROKER=unix:///run/agentsudo/broker.sock   # for agents and launchers
    agentsudo serve --dev        # a laptop: no policy file, this user gets what dev mode gives
    """
    try:
        from agentsudo_tokens.broker.app import BrokerConfig, group_id
        from agentsudo_tokens.broker.server import serve as run_server
    except ImportError as exc:
        raise click.ClickException(
            f"agentsudo serve needs the {exc.name} package: pip install '.[broker]' in a checkout"
        ) from None
    if (policy is None) == (not dev):
        raise click.UsageError("give --policy FILE, or --dev for a laptop (one of the two)")
    current = settings(keys_dir=keys_dir, store=store)
    if dev and socket_path is None and listen is None:
        socket_path = current.keys_dir / "broker.sock"  # reachable by whoever reads the keys
    config = BrokerConfig(
        keys_dir=current.keys_dir,
        policy_path=policy,
        store_url=current.store,
        settings=current,
        audit_log=audit_log,
        header_timeout=header_timeout,
        peer_connections=peer_connections,
        tcp_connections=tcp_connections,
        issue_rate=issue_rate,
        issue_burst=issue_burst,
        public_url=public_url,
    )
    group = group_id(socket_group) if socket_group is not None else None

    def ready(addresses: list[str]) -> None:
        for address in addresses:
            click.echo(f"agentsudo: broker listening on {address}", err=True)
        if dev:
            click.echo(f"agentsudo: dev mode: export AGENTSUDO_BROKER={addresses[0]}", err=True)

    run_server(config, socket_path=socket_path, listen=listen, socket_group=group, on_ready=ready)
