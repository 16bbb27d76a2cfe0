"""A real broker for tests: ``agentsudo serve`` (the installed command) on a Unix socket.

    broker = Broker(tmp_path / "broker", POLICY)      # keys init'ed in root/keys first
    broker.client.issue("SupportBot")                 # BrokerClient over the socket
    broker.stop()                                     # SIGTERM, and its stderr kept

The broker runs in ``root`` with its key directory ``root/keys`` and its
policy ``root/agentsudo.toml``; its state is the key directory's SQLite file.
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

from installed_cli import AGENTSUDO, sh

from agentsudo_tokens.broker.client import BrokerClient


def init_keys(root: Path) -> Path:
    """``agentsudo keys init`` into ``root/keys``; the key directory."""
    root.mkdir(parents=True, exist_ok=True)
    done = sh("keys", "init", "--keys-dir", str(root / "keys"), cwd=root)
    assert done.returncode == 0, done.stderr
    return root / "keys"


class Broker:
    """``agentsudo serve`` in a subprocess, until stopped."""

    def __init__(
        self, root: Path, policy: str, *extra: str, env: dict[str, str] | None = None
    ) -> None:
        self.root = root
        self.policy = root / "agentsudo.toml"
        self.policy.write_text(policy)
        self.socket = root / "broker.sock"
        self.address = f"unix://{self.socket}"
        self.process = subprocess.Popen(
            [AGENTSUDO, "serve", "--policy", str(self.policy), "--keys-dir", str(root / "keys"),
             "--socket", str(self.socket), *extra],
            stderr=subprocess.PIPE, text=True, cwd=root, env=env,
        )  # fmt: skip
        assert self.process.stderr is not None
        line = self.process.stderr.readline()
        if "listening on" not in line:
            self.process.kill()
            raise AssertionError(f"the broker did not start: {line}{self.process.stderr.read()}")
        self.client = BrokerClient(self.address)
        self.stderr = ""

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """End it (``sig``, then a kill after 30 s); its exit status. ``stderr`` holds the rest."""
        if self.process.stderr is not None and self.process.stderr.closed:
            return int(self.process.returncode)
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            self.process.wait(timeout=30)
        finally:
            if self.process.poll() is None:
                self.process.kill()
            assert self.process.stderr is not None
            self.stderr = self.process.stderr.read()
            self.process.stderr.close()
        return self.process.returncode
