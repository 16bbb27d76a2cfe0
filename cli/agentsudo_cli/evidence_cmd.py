"""``agentsudo audit suggest`` and ``audit report``: least privilege and reports from the trail.

    $ agentsudo audit suggest --agent SupportBot --since 7d        # a policy snippet
    $ agentsudo audit report --since 30d --format html -o report.html

Both read the audit files given (default: AGENTSUDO_AUDIT_LOG), the guard's and
the broker's alike. A torn line, a file that is not an audit log or a broken
hash chain is said on stderr (and in the report); the output is still written,
and the exit status is 1.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ._common import terminal_safe

if TYPE_CHECKING:
    from agentsudo_tokens.audit.trail import Trail


def since_time(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """``--since 7d`` into the ISO time an event must be at or after."""
    if value is None:
        return None
    from ._common import duration

    seconds = duration(ctx, param, value)
    assert seconds is not None
    start = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=seconds)
    return start.isoformat(timespec="microseconds").replace("+00:00", "Z")


def trail_of(files: Sequence[Path], since: str | None) -> Trail:
    """The trail of FILES, or of AGENTSUDO_AUDIT_LOG when none is given."""
    from agentsudo_tokens.audit.trail import Trail

    from ._common import settings

    paths = list(files)
    if not paths:
        default = settings().audit_log
        if default is None:
            raise click.UsageError("no audit file: give FILES or set AGENTSUDO_AUDIT_LOG")
        paths = [default]
    return Trail(paths, since=since)


def say_problems(trail: Trail) -> None:
    """Each problem of the trail on stderr, one line each; exit status 1 if any."""
    for problem in trail.problems:
        click.echo(terminal_safe(f"agentsudo: {problem}"), err=True)
    if not trail.ok:
        click.echo("agentsudo: the trail is not whole: treat what it shows with care", err=True)


_FILES = click.argument("files", nargs=-1, type=click.Path(dir_okay=False, path_type=Path))
_SINCE = click.option(
    "--since", callback=since_time, default=None, help="Only events this recent: 7d, 12h, 30m."
)


@click.command("suggest")
@click.option("--agent", required=True, help="The agent whose calls to read.")
@_SINCE
@click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout.")
@_FILES
def suggest(agent: str, since: str | None, as_json: bool, files: tuple[Path, ...]) -> None:
    """Print the smallest scope set that would have allowed what AGENT did, as policy TOML.

    Reads allowed calls and audit-mode violations in FILES (default:
    AGENTSUDO_AUDIT_LOG): the scopes used, exactly; where a wildcard would
    cover several, a comment says so and nothing is widened.
    """
    from agentsudo_tokens.audit.suggest import Usage, suggestion

    trail = trail_of(files, since)
    found = suggestion(Usage.of(trail.events()), agent)
    if as_json:
        click.echo(json.dumps(found.to_dict() | {"ok": trail.ok, "problems": trail.problems}))
    else:
        shown = "all time" if since is None else f"since {since}"
        click.echo(f"# agentsudo audit suggest: {found.allowed} allowed call(s), {shown}")
        click.echo(found.toml(), nl=False)
    say_problems(trail)
    if not trail.ok:
        raise SystemExit(1)


@click.command("report")
@_SINCE
@click.option(
    "--format",
    "form",
    type=click.Choice(["html", "json"]),
    default="html",
    show_default=True,
    help="HTML for people (an inline SVG chart, no script), JSON for programs.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the report here (default: stdout).",
)
@_FILES
def report(since: str | None, form: str, output: Path | None, files: tuple[Path, ...]) -> None:
    """Who did what: calls per agent by scope and outcome, denials, approvals and their
    approvers, each file's hash chain, decisions over time."""
    from agentsudo_tokens.audit.report import build_report
    from agentsudo_tokens.audit.report_html import render_html

    trail = trail_of(files, since)
    built = build_report(trail, since=since)
    text = render_html(built) if form == "html" else json.dumps(built.to_dict(), indent=1) + "\n"
    if output is None:
        click.echo(text, nl=False)
    else:
        try:
            output.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise click.ClickException(f"cannot write {output}: {exc.strerror}") from None
        click.echo(f"report written to {terminal_safe(output)}", err=True)
    say_problems(trail)
    if not built.ok:
        raise SystemExit(1)
