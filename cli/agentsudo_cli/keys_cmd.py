"""``agentsudo keys``: init, rotate, list, jwks, retire, serve."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ._common import ID_ARGUMENT_COMMAND, json_option, keys_dir_option, settings

ALGORITHM_CHOICE = click.Choice(["EdDSA", "ES256"])


def _directory(keys_dir: Path | None):  # type: ignore[no-untyped-def]
    from agentsudo_tokens.tokens.keydir import KeyDirectory

    return KeyDirectory(settings(keys_dir=keys_dir).keys_dir)


@click.group()
def keys() -> None:
    """Manage the issuer's signing keys."""


@keys.command("init")
@click.option("--alg", type=ALGORITHM_CHOICE, default="EdDSA", show_default=True)
@keys_dir_option
def init(alg: str, keys_dir: Path | None) -> None:
    """Create the key directory and a first signing key; print its key id."""
    from agentsudo_tokens.tokens.keydir import KeyDirectory

    path = settings(keys_dir=keys_dir).keys_dir
    directory = KeyDirectory.init(path, alg=alg)
    active = directory.active()
    click.echo(f"created {path}/ with an {alg} key; public keys in {directory.jwks_path}", err=True)
    click.echo(active.kid)


@keys.command("rotate")
@click.option("--alg", type=ALGORITHM_CHOICE, default=None, help="Default: the current key's.")
@click.option(
    "--stage", is_flag=True, help="Publish the new key now, sign with it after 'keys activate'."
)
@keys_dir_option
def rotate(alg: str | None, stage: bool, keys_dir: Path | None) -> None:
    """Make a new active key; the old one keeps verifying until retired."""
    info = _directory(keys_dir).rotate(alg=alg, stage=stage)
    if stage:
        click.echo(
            "new key staged: in jwks.json, not signing; run 'agentsudo keys activate "
            "KID' once verifiers have fetched it",
            err=True,
        )
    else:
        click.echo("new active key; older tokens keep verifying until you retire theirs", err=True)
    click.echo(info.kid)


@keys.command("activate", context_settings=ID_ARGUMENT_COMMAND)
@click.argument("kid")
@keys_dir_option
def activate(kid: str, keys_dir: Path | None) -> None:
    """Start signing with the staged key KID; the old key keeps verifying until retired."""
    _directory(keys_dir).activate(kid)
    click.echo(f"{kid} now signs; the previous key keeps verifying until you retire it", err=True)


@keys.command("list")
@json_option
@keys_dir_option
def list_keys(as_json: bool, keys_dir: Path | None) -> None:
    """Show every key: id, algorithm, status, when created and retired."""
    records = _directory(keys_dir).describe()
    if as_json:
        click.echo(json.dumps(records, indent=2))
        return
    click.echo(f"{'STATUS':<10} {'ALG':<6} {'CREATED':<21} KID")
    for record in records:
        click.echo(
            f"{record['status']:<10} {record['alg']:<6} {record['created']:<21} {record['kid']}"
        )


@keys.command("jwks")
@keys_dir_option
def jwks(keys_dir: Path | None) -> None:
    """Print the public keys (JWK Set) that verifiers need."""
    click.echo(json.dumps(_directory(keys_dir).public_keys().to_dict(), indent=2))


@keys.command("retire", context_settings=ID_ARGUMENT_COMMAND)
@click.argument("kid")
@keys_dir_option
def retire(kid: str, keys_dir: Path | None) -> None:
    """Stop trusting KID: drop it from jwks.json and delete its private key."""
    _directory(keys_dir).retire(kid)
    click.echo(f"retired {kid}: tokens signed by it no longer verify", err=True)


@keys.command("serve")
@click.option(
    "--port", type=click.IntRange(0, 65535), default=8765, show_default=True, help="0: any free."
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--public", is_flag=True, help="Allow a --host other than a loopback address.")
@keys_dir_option
def serve(port: int, host: str, public: bool, keys_dir: Path | None) -> None:
    """Serve the public keys at /.well-known/jwks.json until Ctrl-C (for local setups).

    Verifiers point AGENTSUDO_JWKS at the printed URL. jwks.json is re-read on
    every request, so rotate and retire show up at once; nothing else in the
    key directory is ever served.
    """
    from agentsudo_tokens.tokens.jwks_remote import is_loopback_host, serve_jwks

    directory = _directory(keys_dir)
    directory.list()  # no key directory: fail now, not at the first request
    directory.public_keys()
    if not is_loopback_host(host):
        if not public:
            raise click.UsageError(
                f"--host {host} is not a loopback address; add --public to serve beyond this host"
            )
        click.echo(
            f"warning: serving public keys on {host} over plain http; verifiers on other "
            "hosts accept only https, so put a TLS proxy in front",
            err=True,
        )
    server = serve_jwks(directory.public_keys, host, port)
    shown = f"[{host}]" if ":" in host else host
    click.echo(f"serving http://{shown}:{server.server_address[1]}/.well-known/jwks.json", err=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        click.echo("stopped", err=True)
    finally:
        server.server_close()
