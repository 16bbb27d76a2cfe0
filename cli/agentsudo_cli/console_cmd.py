"""``agentsudo console``: a one-time login link to the broker's web console (admins only).

    $ AGENTSUDO_BROKER=unix:///run/agentsudo/broker.sock agentsudo console
    http://127.0.0.1:8700/console/login?t=...
    $ agentsudo console --base-url http://localhost:9000   # through a tunnel or a proxy

The broker makes the link (256 random bits, used once, within 5 minutes; it keeps
only its hash) for a caller its policy names an admin, and serves the console on
its TCP listener (``agentsudo serve --listen``). The link alone goes to stdout.
"""

from __future__ import annotations

import json
from urllib.parse import urlsplit

import click

from ._common import broker_of, json_option, settings, terminal_safe


def _base(value: str | None) -> str | None:
    """``--base-url``: ``http(s)://host[:port]``, nothing after it.

    :raises click.BadParameter: anything else.
    """
    if value is None:
        return None
    parts = urlsplit(value.strip())
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.path.strip("/")
        or parts.query
        or parts.fragment
        or parts.username is not None
        or not value.isascii()
    ):
        raise click.BadParameter(
            f"expected http(s)://HOST[:PORT], found {value!r}", param_hint="--base-url"
        )
    return value.strip().rstrip("/")


@click.command()
@click.option(
    "--base-url",
    default=None,
    metavar="URL",
    help="Where your browser reaches the broker's TCP listener (a tunnel, a proxy) "
    "[default: the address the broker listens on].",
)
@json_option
def console(base_url: str | None, as_json: bool) -> None:
    """Print a one-time login link to the broker's web console (admins only).

    The link works once, within 5 minutes; following it logs your browser in for
    at most 8 hours. Needs AGENTSUDO_BROKER (and, over TCP, an admin's
    AGENTSUDO_BROKER_CREDENTIAL).
    """
    from agentsudo_tokens.errors import ConfigError

    base = _base(base_url)
    client = broker_of(settings())
    if client is None:
        raise click.UsageError(
            "the console is served by the broker: set AGENTSUDO_BROKER to its address"
        )
    answer = client.request("POST", "/v1/console/links", {})
    path, url, expires = answer.get("path"), answer.get("url"), answer.get("expires_at")
    if not isinstance(path, str) or not path.startswith("/console/login?t="):
        raise ConfigError(f"the broker at {client.address} answered without a login link")
    if base is not None:
        url = base + path
    if not isinstance(url, str):
        raise ConfigError(
            "the broker serves the console on its TCP listener and has none: start it with "
            "--listen 127.0.0.1:PORT, or give --base-url where your browser reaches it"
        )
    if as_json:
        click.echo(json.dumps({"url": url, "expires_at": expires}))
        return
    click.echo(terminal_safe(url))
    click.echo("agentsudo: open it within 5 minutes; it logs in once", err=True)
