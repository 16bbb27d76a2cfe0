"""The audit file refuses what it cannot trust: duplicate keys, symlinks, files others may write."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from agentsudo_cli.main import cli
from agentsudo_tokens import ConfigError
from agentsudo_tokens.audit.file import AuditFile, read_events, verify_chain

AGENTSUDO = Path(sys.executable).parent / "agentsudo"


def _chain(path: Path, count: int = 5) -> Path:
    sink = AuditFile(path)
    for n in range(count):
        sink.append({"outcome": "allowed", "agent": "A", "scope": "read:x", "n": n})
    sink.close()
    return path


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTSUDO_")}
    env.update(extra)
    return env


# --- strict parsing ---------------------------------------------------------------------------


def _with_a_forged_first_key(log: Path, number: int) -> None:
    """Line ``number`` gets an extra leading ``"agent":"Mallory"``.

    A parser that keeps the last duplicate computes the original hash (so a lax
    check passes), while one that keeps the first shows Mallory.
    """
    lines = log.read_bytes().splitlines(keepends=True)
    line = lines[number - 1]
    assert line.startswith(b"{")
    lines[number - 1] = b'{"agent":"Mallory",' + line[1:]
    log.write_bytes(b"".join(lines))


def test_a_line_with_a_duplicate_key_is_rejected(tmp_path: Path) -> None:
    log = _chain(tmp_path / "audit.jsonl")
    _with_a_forged_first_key(log, 3)
    report = verify_chain(log)
    assert not report.ok
    assert report.bad_line == 3 and report.events == 2
    assert report.problem == "a duplicate JSON key 'agent'"


def test_cli_audit_verify_rejects_a_duplicate_key(tmp_path: Path) -> None:
    log = _chain(tmp_path / "audit.jsonl")
    _with_a_forged_first_key(log, 4)
    done = subprocess.run(
        [str(AGENTSUDO), "audit", "verify", str(log)],
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "agentsudo: TAMPERED: line 4: a duplicate JSON key 'agent' (3 events verified before it)"
    )
    as_json = CliRunner().invoke(cli, ["audit", "verify", str(log), "--json"])
    assert as_json.exit_code == 1
    assert json.loads(as_json.stdout)["problem"] == "a duplicate JSON key 'agent'"


def test_show_skips_a_line_with_a_duplicate_key(tmp_path: Path) -> None:
    log = _chain(tmp_path / "audit.jsonl")
    _with_a_forged_first_key(log, 2)
    assert [e["n"] for e in read_events(log)] == [0, 2, 3, 4]


@pytest.mark.parametrize(
    "line",
    [
        b' {"hash":"x"}\n',  # whitespace around the object
        b'{"hash":"x"} {}\n',  # two documents
        b'{"hash":"x","n":NaN}\n',  # not a finite number
        b"[" * 100_000 + b"]" * 100_000 + b"\n",  # too deep
        b'{"hash":"\xff"}\n',  # not UTF-8
    ],
    ids=["whitespace", "two-documents", "nan", "deep", "not-utf8"],
)
def test_lines_not_in_the_writers_strict_form_are_rejected(tmp_path: Path, line: bytes) -> None:
    log = _chain(tmp_path / "audit.jsonl", 2)
    with log.open("ab") as handle:
        handle.write(line)
    report = verify_chain(log)
    assert not report.ok and report.bad_line == 3 and report.events == 2


# --- what the file is ---------------------------------------------------------------------------


def test_a_symlink_at_the_audit_path_is_refused_not_followed(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.txt"
    target.write_text("precious\n")
    target.chmod(0o600)
    link = tmp_path / "audit.jsonl"
    link.symlink_to(target)
    with pytest.raises(ConfigError, match="symbolic link"):
        AuditFile(link).append({"outcome": "allowed"})
    assert target.read_text() == "precious\n"
    with pytest.raises(ConfigError, match="symbolic link"):
        verify_chain(link)
    with pytest.raises(ConfigError, match="symbolic link"):
        list(read_events(link))


GUARDED = textwrap.dedent(
    """
    from agentsudo_tokens import Agent, ConfigError, sudo

    ran = []

    @sudo(scope="write:refunds")
    def refund():
        ran.append(1)

    try:
        with Agent("SupportBot", ["write:refunds"]).start_session():
            refund()
    except ConfigError as exc:
        print(exc)
    print("ran" if ran else "did not run")
    """
)


def test_the_default_configuration_fails_closed_on_a_symlinked_audit_log(tmp_path: Path) -> None:
    target = _chain(tmp_path / "real.jsonl", 2)
    before = target.read_bytes()
    link = tmp_path / "audit.jsonl"
    link.symlink_to(target)
    script = tmp_path / "guarded.py"
    script.write_text(GUARDED)
    done = subprocess.run(
        [sys.executable, str(script)],
        env=_clean_env(AGENTSUDO_AUDIT_LOG=str(link)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    first, second = done.stdout.splitlines()
    assert first == (
        f"the audit log {link} is a symbolic link: refusing to follow it (give the real path)"
    )
    assert second == "did not run"
    assert target.read_bytes() == before
    cli_run = subprocess.run(
        [str(AGENTSUDO), "audit", "verify", str(link)],
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert cli_run.returncode == 2
    assert "symbolic link" in cli_run.stderr and "Traceback" not in cli_run.stderr


@pytest.mark.parametrize("mode", [0o620, 0o602, 0o666, 0o660], ids=oct)
def test_a_file_others_may_write_is_refused(tmp_path: Path, mode: int) -> None:
    log = _chain(tmp_path / "audit.jsonl", 2)
    before = log.read_bytes()
    log.chmod(mode)
    with pytest.raises(ConfigError, match=f"writable by group or others \\(mode {mode:04o}\\)"):
        AuditFile(log).append({"outcome": "allowed"})
    assert log.read_bytes() == before
    with pytest.raises(ConfigError, match="writable by group or others"):
        verify_chain(log)
    done = CliRunner().invoke(cli, ["audit", "verify", str(log)])
    assert done.exit_code == 2 and "chmod go-w" in done.stderr


def test_a_file_made_writable_by_others_while_open_is_refused(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    sink = AuditFile(log)
    sink.append({"outcome": "allowed", "n": 0})
    log.chmod(0o622)
    with pytest.raises(ConfigError, match="writable by group or others"):
        sink.append({"outcome": "allowed", "n": 1})
    sink.close()


def test_a_readable_file_is_fine(tmp_path: Path) -> None:
    log = _chain(tmp_path / "audit.jsonl", 2)
    log.chmod(0o644)
    AuditFile(log).append({"outcome": "allowed"})
    assert verify_chain(log).ok and verify_chain(log).events == 3


def test_something_that_is_not_a_regular_file_is_refused(tmp_path: Path) -> None:
    fifo = tmp_path / "audit.jsonl"
    os.mkfifo(fifo, 0o600)
    with pytest.raises(ConfigError, match="not a regular file"):
        AuditFile(fifo).append({"outcome": "allowed"})
    with pytest.raises(ConfigError, match="not a regular file"):
        verify_chain(fifo)


def test_a_file_with_another_name_is_refused(tmp_path: Path) -> None:
    """A hard link elsewhere (put there by whoever could write the directory) is refused."""
    log = _chain(tmp_path / "audit.jsonl", 2)
    os.link(log, tmp_path / "other-name")
    with pytest.raises(ConfigError, match="hard link"):
        AuditFile(log).append({"outcome": "allowed"})


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root")
def test_a_file_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    """Root could open it, but its owner could rewrite it: not our audit log."""
    log = _chain(tmp_path / "audit.jsonl", 2)
    os.chown(log, 65534, -1)
    with pytest.raises(ConfigError, match="owned by uid 65534"):
        AuditFile(log).append({"outcome": "allowed"})


def test_a_world_writable_directory_without_the_sticky_bit_is_refused(tmp_path: Path) -> None:
    """Anyone could rename the file away and put another in its place."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(ConfigError, match="sticky bit"):
        AuditFile(shared / "audit.jsonl").append({"outcome": "allowed"})
    assert not (shared / "audit.jsonl").exists()


@pytest.mark.parametrize("mode", [0o1777, 0o775, 0o755, 0o700], ids=oct)
def test_directories_that_are_fine(tmp_path: Path, mode: int) -> None:
    """Sticky like /tmp, group-writable like Debian's /var/log (root:syslog 0775), or private."""
    where = tmp_path / "logs"
    where.mkdir()
    where.chmod(mode)
    AuditFile(where / "audit.jsonl").append({"outcome": "allowed"})
    assert verify_chain(where / "audit.jsonl").ok


def test_a_write_that_fails_half_way_leaves_no_torn_line(tmp_path: Path) -> None:
    """A full disk (here the file-size limit, RLIMIT_FSIZE) mid-line: the line is taken back,
    so the chain still verifies once there is room again."""
    script = textwrap.dedent(
        """
        import resource, signal, sys
        from pathlib import Path
        from agentsudo_tokens.audit.file import AuditFile, verify_chain
        from agentsudo_tokens.errors import ConfigError

        path = Path(sys.argv[1])
        log = AuditFile(path)
        log.append({"outcome": "allowed", "n": 0})
        size = path.stat().st_size
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a failed write, not a killed process
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (size + 100, hard))
        try:
            log.append({"outcome": "allowed", "pad": "x" * 1000})
        except ConfigError:
            print("refused")
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        print(path.stat().st_size == size)
        log.append({"outcome": "allowed", "n": 2})
        print(verify_chain(path).ok, verify_chain(path).events)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "audit.jsonl")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.stdout.split() == ["refused", "True", "True", "2"], done.stderr
