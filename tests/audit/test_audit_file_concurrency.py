"""The audit file under several writers: big events, many processes, forks, torn tails.

The chain links each line to the one before it, so every append must read the
previous hash and write its own line under one lock, however big the line and
whichever process wrote the line before.
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from agentsudo_tokens import ConfigError
from agentsudo_tokens.audit.file import MAX_LINE_BYTES, AuditFile, read_events, verify_chain

AGENTSUDO = Path(sys.executable).parent / "agentsudo"
KIB = 1024
MIB = 1024 * KIB

# Each writer waits on stdin until all are ready, so they really append at once.
# Its events name the process and the call; their sizes run from a few bytes to
# 1 MiB, and each process ends on a big one, so the line before another
# process's append is often bigger than 64 KiB.
BIG_WRITER = textwrap.dedent(
    """
    import sys
    from agentsudo_tokens import Agent, sudo

    proc = sys.argv[1]
    sizes = [int(size) for size in sys.argv[2].split(",")]
    with Agent("P" + proc, ["write:refunds"]).start_session():
        print("ready", flush=True)
        sys.stdin.readline()
        for n, size in enumerate(sizes):
            def tool(n=n):
                return n
            tool.__qualname__ = f"tool_{proc}_{n}_" + "x" * size
            assert sudo(scope="write:refunds")(tool)() == n
    """
)

SIZES = [10, 70 * KIB, 300, MIB, 5, 64 * KIB + 1, 200 * KIB, 40, 500 * KIB, 3, 1, 130 * KIB]


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTSUDO_")}
    env.update(extra)
    return env


def test_eight_processes_with_events_up_to_1_mib_keep_the_chain(tmp_path: Path) -> None:
    """The default configuration: AGENTSUDO_AUDIT_LOG, @sudo in 8 processes, then the CLI."""
    log = tmp_path / "audit.jsonl"
    script = tmp_path / "big_writer.py"
    script.write_text(BIG_WRITER)
    env = _clean_env(AGENTSUDO_AUDIT_LOG=str(log))
    sizes = ",".join(map(str, SIZES))
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(i), sizes],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(8)
    ]
    for proc in procs:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    for proc in procs:  # all are ready: let them go together
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.close()
    assert [proc.wait(timeout=300) for proc in procs] == [0] * 8
    for proc in procs:
        assert proc.stdout is not None
        proc.stdout.close()

    checked = subprocess.run(
        [str(AGENTSUDO), "audit", "verify", str(log)],
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    total = 8 * (len(SIZES) + 2)  # each call, and the session's start and end
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.startswith(f"ok: {total} events, chain intact")

    shown = subprocess.run(
        [str(AGENTSUDO), "audit", "show", "--sessions", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert shown.returncode == 0, shown.stderr
    events = [json.loads(line) for line in shown.stdout.splitlines()]
    assert len(events) == total
    calls = collections.Counter(
        tuple(str(e["function"]).split("_")[1:3]) for e in events if e["outcome"] == "allowed"
    )
    assert calls == collections.Counter(
        (str(i), str(n)) for i in range(8) for n in range(len(SIZES))
    )  # every event there, exactly once
    for event in events:
        if event["outcome"] == "allowed":
            i, n = str(event["function"]).split("_")[1:3]
            assert event["agent"] == f"P{i}"
            assert len(str(event["function"])) == len(f"tool_{i}_{n}_") + SIZES[int(n)]


def test_a_last_line_bigger_than_any_tail_window_still_chains(tmp_path: Path) -> None:
    """Another writer's line before ours may be far bigger than 64 KiB."""
    log = tmp_path / "audit.jsonl"
    first, second = AuditFile(log), AuditFile(log)
    first.append({"outcome": "allowed", "n": 0})
    for n, size in enumerate([200 * KIB, 64 * KIB, MIB, 10], start=1):
        first.append({"outcome": "allowed", "n": n, "function": "f" * size})
        second.append({"outcome": "allowed", "n": n, "function": "small"})
    report = verify_chain(log)
    assert report.ok, report.problem
    assert report.events == 9
    first.close()
    second.close()


def test_a_line_too_big_to_verify_is_never_written(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    sink = AuditFile(log)
    sink.append({"outcome": "allowed", "n": 0})
    with pytest.raises(ConfigError, match="too big"):
        sink.append({"outcome": "allowed", "function": "f" * MAX_LINE_BYTES})
    sink.append({"outcome": "allowed", "n": 1})
    assert verify_chain(log).ok and verify_chain(log).events == 2
    sink.close()


def test_an_event_that_is_not_strict_json_is_never_written(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    sink = AuditFile(log)
    with pytest.raises(ConfigError, match="JSON"):
        sink.append({"outcome": "allowed", "n": float("nan")})
    assert not log.exists() or log.read_bytes() == b""
    sink.close()


FORKER = textwrap.dedent(
    """
    import os, sys
    from agentsudo_tokens.audit.file import AuditFile

    sink = AuditFile(sys.argv[1])
    sink.append({"outcome": "allowed", "who": "parent", "n": -1})  # the descriptor is open
    children = []
    for child in range(4):
        pid = os.fork()
        if pid == 0:
            for n in range(300):
                event = {"outcome": "allowed", "who": f"child{child}", "n": n}
                sink.append({**event, "pad": "p" * 3000})
            os._exit(0)
        children.append(pid)
    for n in range(300):
        sink.append({"outcome": "allowed", "who": "parent", "n": n, "pad": "p" * 3000})
    codes = [os.waitpid(pid, 0)[1] for pid in children]
    sys.exit(1 if any(codes) else 0)
    """
)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_children_do_not_share_the_parents_lock(tmp_path: Path) -> None:
    """A child inherits the open descriptor; flock on a shared descriptor excludes nobody."""
    log = tmp_path / "audit.jsonl"
    script = tmp_path / "forker.py"
    script.write_text(FORKER)
    done = subprocess.run(
        [sys.executable, str(script), str(log)], env=_clean_env(), timeout=300, check=False
    )
    assert done.returncode == 0
    report = verify_chain(log)
    assert report.ok, f"line {report.bad_line}: {report.problem}"
    assert report.events == 1 + 5 * 300


def test_a_torn_last_line_does_not_swallow_the_next_event(tmp_path: Path) -> None:
    """A writer killed mid-line leaves a torn tail; the next event starts a line of its own."""
    log = tmp_path / "audit.jsonl"
    AuditFile(log).append({"outcome": "allowed", "n": 0})
    with log.open("ab") as handle:
        handle.write(b'{"outcome":"allowed","n":1,"pr')  # torn
    AuditFile(log).append({"outcome": "allowed", "n": 2})
    assert [e["n"] for e in read_events(log)] == [0, 2]
    report = verify_chain(log)
    assert not report.ok and report.bad_line == 2 and report.events == 1
