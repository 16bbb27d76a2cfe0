"""A FastAPI service under uvicorn for end-to-end tests: started on a free loopback port from
the source given, asked with a Bearer token until it answers what is expected.

    with service(env, tmp_path, SOURCE) as url:      # SOURCE defines `app`, route /orders
        assert until(url, token, 403)[0] == 403
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path


def ask(url: str, token: str) -> tuple[int, str]:
    """The answer's status and body for a GET with ``token`` as a Bearer token."""
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read().decode()


def until(url: str, token: str, expected: int, timeout: float = 30.0) -> tuple[int, str]:
    """Ask again until the status is ``expected`` or ``timeout`` passes; the last answer."""
    deadline = time.monotonic() + timeout
    while True:
        found = ask(url, token)
        if found[0] == expected or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


@contextlib.contextmanager
def service(env: dict[str, str], cwd: Path, source: str) -> Iterator[str]:
    """``source`` (a module defining ``app``) under uvicorn on a free loopback port, until the
    block ends; the URL of its ``/orders``."""
    (cwd / "svc.py").write_text(textwrap.dedent(source))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "uvicorn", "svc:app", "--app-dir", str(cwd)]
    command += ["--host", "127.0.0.1", "--port", str(port), "--no-access-log"]
    process = subprocess.Popen(command, env=env, cwd=cwd, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}/orders"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, process.stderr.read().decode()  # type: ignore[union-attr]
            try:
                urllib.request.urlopen(url, timeout=1).close()
            except urllib.error.HTTPError:
                break  # answering (401 without a token)
            except OSError:
                assert time.monotonic() < deadline, "the service did not start"
                time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()
