"""Key rotation without downtime, end to end, with real processes.

The issuer is the ``agentsudo`` command; the public keys are published by
``agentsudo keys serve``; the service is a separate, long-running Python
process that verifies tokens read from stdin against
``AGENTSUDO_JWKS=http://127.0.0.1:PORT/.well-known/jwks.json`` with a one-second
cache lifetime. The story: tokens from key 1, rotate, tokens from key 2, the
running service accepts both, retire key 1, and once the service's cache
lifetime has passed, key-1 tokens are refused with ``UnknownKeyError`` while
key-2 tokens still pass. Every wait is bounded; every process is stopped in a
``finally``.
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

AGENTSUDO = Path(sys.executable).parent / "agentsudo"
MAX_AGE = 1.0
MIN_REFETCH_INTERVAL = 0.2

SERVICE = f"""
import sys
from agentsudo_tokens import InvalidTokenError, Verifier
from agentsudo_tokens.config import Settings
from agentsudo_tokens.tokens.jwks import load_key_source

settings = Settings.from_env()
verifier = Verifier(
    load_key_source(
        settings.jwks_source, max_age={MAX_AGE}, min_refetch_interval={MIN_REFETCH_INTERVAL}
    ),
    issuer=settings.issuer,
    audience=settings.audience,
)
print("ready", flush=True)
for line in sys.stdin:
    try:
        claims = verifier.verify(line.strip())
    except InvalidTokenError as exc:
        print("refused", type(exc).__name__, flush=True)
    else:
        print("ok", claims.kid, flush=True)
"""


def _env(keys: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTSUDO_")}
    env.update(AGENTSUDO_KEYS_DIR=str(keys), **extra)
    return env


def _agentsudo(keys: Path, *args: str) -> str:
    done = subprocess.run(
        [str(AGENTSUDO), *args], env=_env(keys), capture_output=True, text=True, timeout=10
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def _start_serve(keys: Path, log: Path) -> tuple[subprocess.Popen[bytes], int]:
    """``agentsudo keys serve --port 0``; the port is read from its stderr line."""
    with log.open("wb") as stderr:
        proc = subprocess.Popen(
            [str(AGENTSUDO), "keys", "serve", "--port", "0"],
            env=_env(keys),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and proc.poll() is None:
        for line in log.read_text().splitlines():
            prefix, _, rest = line.partition("serving http://127.0.0.1:")
            if not prefix and rest.endswith("/.well-known/jwks.json"):
                return proc, int(rest.partition("/")[0])
        time.sleep(0.02)
    _stop(proc)
    raise AssertionError(f"agentsudo keys serve did not start: {log.read_text()!r}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:  # pragma: no cover
        proc.kill()
        proc.wait()


def _mint(keys: Path) -> str:
    return _agentsudo(keys, "issue", "--agent", "SupportBot", "--scopes", "read:orders")


class Service:
    """The verifying service: one token per line in, one answer per line out."""

    def __init__(self, keys: Path, jwks_url: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SERVICE],
            env=_env(keys, AGENTSUDO_JWKS=jwks_url),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._lines: queue.Queue[str] = queue.Queue()
        self._pump = threading.Thread(target=self._read_answers, daemon=True)
        self._pump.start()
        first = self._next()
        if first != "ready":
            raise AssertionError(f"the service did not start: {first} {self.stop()!r}")

    def _read_answers(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line.strip())
        self._lines.put("<exited>")

    def _next(self) -> str:
        try:
            return self._lines.get(timeout=10)
        except queue.Empty:  # pragma: no cover
            raise AssertionError("the service did not answer within 10 s") from None

    def verify(self, token: str) -> str:
        assert self.proc.stdin is not None
        self.proc.stdin.write(token + "\n")
        self.proc.stdin.flush()
        return self._next()

    def stop(self) -> str:
        """End the service (EOF on stdin); return what it wrote on stderr."""
        assert self.proc.stdin and self.proc.stdout and self.proc.stderr
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:  # pragma: no cover
            self.proc.kill()
            self.proc.wait()
        self._pump.join(timeout=5)
        self.proc.stdout.close()
        with self.proc.stderr:
            return self.proc.stderr.read()


def test_rotate_then_retire_without_downtime(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    kid1 = _agentsudo(keys, "keys", "init")
    token_a = _mint(keys)

    serve, port = _start_serve(keys, tmp_path / "serve.log")
    service: Service | None = None
    try:
        service = Service(keys, f"http://127.0.0.1:{port}/.well-known/jwks.json")
        started = time.monotonic()
        assert service.verify(token_a) == f"ok {kid1}"

        kid2 = _agentsudo(keys, "keys", "rotate")
        assert kid2 != kid1
        token_b = _mint(keys)
        # the service looks for a new kid at most once per MIN_REFETCH_INTERVAL
        time.sleep(max(0.0, started + MIN_REFETCH_INTERVAL + 0.05 - time.monotonic()))
        assert service.verify(token_b) == f"ok {kid2}"  # a new kid: refetched at once
        assert service.verify(token_a) == f"ok {kid1}"  # the old key still verifies

        _agentsudo(keys, "keys", "retire", kid1)
        retired = time.monotonic()
        time.sleep(MAX_AGE + 0.2)  # the service's cache lifetime, and a little more
        assert service.verify(token_a) == "refused UnknownKeyError"
        assert service.verify(token_b) == f"ok {kid2}"
        assert service.verify(token_a) == "refused UnknownKeyError"
        assert time.monotonic() - retired < MAX_AGE + 2
    finally:
        stderr = service.stop() if service is not None else ""
        _stop(serve)
    assert "Traceback" not in stderr

    log = (tmp_path / "serve.log").read_text()
    fetches = log.count('"GET /.well-known/jwks.json')
    assert 3 <= fetches <= 4  # start, the new kid, after max_age (one more at most)
    assert "PRIVATE" not in log
