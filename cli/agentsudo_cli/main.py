"""The root ``agentsudo`` group: error mapping and logging, set up once.

    $ agentsudo keys init
    $ export AGENTSUDO_TOKEN=$(agentsudo issue --agent SupportBot --scopes read:orders)
    $ agentsudo verify --scope read:orders

Exit status: 0 success; 1 a token rejected, a scope denied, or an internal
error (failing closed); 2 bad usage or configuration. Errors are one line on
stderr (or one JSON object on stdout with ``--json``), never a traceback
unless ``--debug``. A reader that goes away (``agentsudo ... | head -1``) ends
the command quietly, with status 1. Only click is imported here, and a
command's module only when that command runs, so ``--help`` stays fast.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any, NoReturn

import click

_USAGE_ERRORS = ("ConfigError", "InvalidScopeError", "InvalidLimitError")

# name: (module, attribute, the line `agentsudo --help` shows). A command's module
# is imported when the command runs or completes, never for the list.
_COMMANDS: dict[str, tuple[str, str, str]] = {
    "approvals": ("approvals_cmd", "approvals", "List the calls waiting for a human's answer."),
    "approve": ("approvals_cmd", "approve", "Approve a waiting call: it proceeds, once."),
    "audit": ("audit_cmd", "audit", "Verify or show the hash-chained audit file."),
    "budget": ("budget_cmd", "budget", "Show what each budget of a token has left."),
    "console": ("console_cmd", "console", "Print a one-time login link to the web console."),
    "deny": ("approvals_cmd", "deny", "Deny a waiting call: it raises PermissionDeniedError."),
    "inspect": ("inspect_cmd", "inspect_token", "Decode a token WITHOUT verifying it."),
    "issue": ("issue_cmd", "issue", "Mint a short-lived token for an agent and print it."),
    "keys": ("keys_cmd", "keys", "Manage the issuer's signing keys."),
    "policy": ("policy_cmd", "policy", "Check the broker's policy file (agentsudo.toml)."),
    "revoke": ("revoke_cmd", "revoke", "Revoke a token, or every token of an agent."),
    "run": ("run_cmd", "run", "Run a command with a fresh token in its environment."),
    "scopes": ("scopes_cmd", "scopes", "List what each scope unlocks in a module or app."),
    "serve": ("serve_cmd", "serve", "Serve the broker: it alone holds the key and the policy."),
    "verify": ("verify_cmd", "verify", "Verify a token, and the scopes it must grant."),
}


def _exit_code(exc: Exception) -> int:
    names = {cls.__name__ for cls in type(exc).__mro__}
    return 2 if names & set(_USAGE_ERRORS) else 1


class _Failure(click.ClickException):
    """One line on stderr (or a JSON object on stdout) and the right exit code."""

    def __init__(self, message: str, code: int, kind: str, as_json: bool) -> None:
        super().__init__(message)
        self.exit_code = code
        self.kind = kind
        self.as_json = as_json

    def show(self, file: Any = None) -> None:
        import json

        from ._common import terminal_safe

        if self.as_json:
            payload = {"ok": False, "error": self.kind, "message": self.message}
            try:
                click.echo(json.dumps(payload))
                return
            except BrokenPipeError:
                raise  # the reader went away: main() ends quietly
            except OSError:  # stdout cannot take it (full, bad descriptor): say it on stderr
                pass
        click.echo(terminal_safe(f"agentsudo: {self.message}"), err=True)


class AgentSudoGroup(click.Group):
    """Turns library errors into exit codes; anything unexpected fails closed.

    Commands load lazily from ``_COMMANDS``.
    """

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in _COMMANDS:
            module, attribute, _ = _COMMANDS[cmd_name]
            command = getattr(importlib.import_module(f"{__package__}.{module}"), attribute)
            self.add_command(command, cmd_name)
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, line) for name, (_, _, line) in sorted(_COMMANDS.items())])

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort, BrokenPipeError):
            raise  # a closed stdout is main()'s to handle, --debug or not
        except Exception as exc:
            from agentsudo_tokens.errors import AgentSudoError, InvalidTokenError

            from ._common import JSON_META

            as_json = bool(ctx.meta.get(JSON_META))
            if ctx.meta.get("agentsudo.debug"):
                raise
            if isinstance(exc, AgentSudoError):
                message = (
                    f"token rejected: {exc}" if isinstance(exc, InvalidTokenError) else str(exc)
                )
                raise _Failure(message, _exit_code(exc), type(exc).__name__, as_json) from exc
            raise _Failure(
                f"internal error: {type(exc).__name__}: {exc}", 1, "InternalError", as_json
            ) from exc


@click.group(cls=AgentSudoGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logging.")
@click.version_option(package_name="agentsudo-tokens", prog_name="agentsudo")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """sudo for AI agents: mint, verify and use signed capability tokens."""
    ctx.meta["agentsudo.debug"] = debug
    if ctx.obj is _CONSOLE:  # main() runs a command: logging now, not for a bare --help
        _setup_logging()
    if debug:
        import logging

        logging.getLogger("agentsudo").setLevel(logging.DEBUG)


_CONSOLE = object()  # ctx.obj when main() runs: the console script, not a test's CliRunner


def _setup_logging() -> None:
    import logging  # here, so that `agentsudo --help` does not load it

    logger = logging.getLogger("agentsudo")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("agentsudo: %(levelname)s %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)


def _reader_gone() -> bool:
    """Whether the reader of stdout or stderr went away (closed at the other end)."""
    import select

    poller = select.poll()
    for stream in (sys.__stdout__, sys.__stderr__):
        try:
            poller.register(stream.fileno(), select.POLLOUT)  # type: ignore[union-attr]
        except (AttributeError, OSError, ValueError):
            return True  # no usable stream at all: nothing more can be said on it
    return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))


def _end_quietly() -> NoReturn:
    """Status 1 and nothing more on any stream, as the Python docs advise for EPIPE.

    stdout is pointed at /dev/null so that the interpreter's last flush cannot
    fail ("Exception ignored ... BrokenPipeError").
    """
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.__stdout__.fileno())  # type: ignore[union-attr]
    except (AttributeError, OSError, ValueError):
        pass
    sys.exit(1)


def main() -> None:
    """Console entry point."""
    if sys.stdout is None:  # started with stdout closed (`>&-`): a result would be lost unseen
        if sys.stderr is not None:
            sys.stderr.write("agentsudo: standard output is closed; nothing was done\n")
        sys.exit(1)
    try:
        try:
            cli(prog_name="agentsudo", obj=_CONSOLE)
        finally:
            if sys.__stdout__ is not None:
                sys.__stdout__.flush()  # now, so a closed pipe is seen here, not at exit
    except BrokenPipeError as exc:
        if not _reader_gone():  # another pipe broke: an internal error, failing closed
            click.echo(f"agentsudo: internal error: {type(exc).__name__}: {exc}", err=True)
            sys.exit(1)
        _end_quietly()
