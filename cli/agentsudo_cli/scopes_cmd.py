"""``agentsudo scopes``: what each scope unlocks, as JSON."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from ._common import json_option


@click.command()
@click.argument("targets", nargs=-1, required=True, metavar="TARGET...")
@click.option(
    "--app-dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="Directory to import TARGET from (put first on sys.path).",
)
@json_option
def scopes(targets: tuple[str, ...], app_dir: Path, as_json: bool) -> None:
    """List every @sudo function and scope-guarded route in TARGET, by scope, as JSON.

    \b
    agentsudo scopes billing_service            # a module: its functions and apps
    agentsudo scopes billing_service:app        # one app (module:attribute)

    TARGET is imported, so its module-level code runs. The map is always JSON;
    errors are one line on stderr, or JSON on stdout with --json.
    """
    from agentsudo_tokens.integrations.scopemap import scope_map

    sys.path.insert(0, str(app_dir.resolve()))
    click.echo(json.dumps(scope_map(*targets).to_dict(), indent=2))
