"""The end-to-end demo: keys, tokens for two agents, a child process, and verify.

    python examples/demo.py

Everything happens in a throwaway directory with its own keys; nothing is left behind.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _agentsudo() -> list[str]:
    """The installed console script next to this Python, else the one on PATH."""
    beside = Path(sys.executable).parent / "agentsudo"
    if beside.exists():
        return [str(beside)]
    found = shutil.which("agentsudo")
    if found is None:
        raise SystemExit("agentsudo is not installed: pip install .")
    return [found]


def _step(title: str) -> None:
    print(f"\n== {title}")


def main() -> int:
    """Run the story; exit 0 only if every outcome is the expected one."""
    failures = 0
    with tempfile.TemporaryDirectory(prefix="agentsudo-demo-") as work:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTSUDO_")}
        env["AGENTSUDO_KEYS_DIR"] = str(Path(work) / "keys")
        tokens: dict[str, str] = {}

        def cli(*args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
            run_env = dict(env, **({"AGENTSUDO_TOKEN": token} if token else {}))
            shown = " ".join(a if " " not in a and "*" not in a else repr(a) for a in args)
            holder = next((f"{n}'s" for n, t in tokens.items() if t == token), "a forged")
            prefix = f"AGENTSUDO_TOKEN=<{holder} token> " if token else ""
            print(f"$ {prefix}agentsudo {shown}")
            return subprocess.run(
                [*_agentsudo(), *args], env=run_env, capture_output=True, text=True, check=False
            )

        _step("1. the issuer makes a signing key (Ed25519); verifiers only need jwks.json")
        done = cli("keys", "init")
        print(f"  key id {done.stdout.strip()}  ({done.stderr.strip()})")

        _step("2. two agents, two short-lived tokens, each with only the scopes it needs")
        support = cli("issue", "--agent", "SupportBot", "--scopes", "read:orders,write:refunds")
        analytics = cli("issue", "--agent", "AnalyticsBot", "--scopes", "read:*", "--ttl", "5m")
        tokens.update(SupportBot=support.stdout.strip(), AnalyticsBot=analytics.stdout.strip())
        for name, token in tokens.items():
            print(f"  {name}: {token[:32]}...{token[-8:]} ({len(token)} bytes)")

        _step("3. each agent runs as a child process with AGENTSUDO_TOKEN; no code change")
        expected_denials = {"SupportBot": 1, "AnalyticsBot": 2}
        for name, token in tokens.items():
            child = subprocess.run(
                [sys.executable, str(HERE / "support_agent.py")],
                env=dict(env, AGENTSUDO_TOKEN=token),
                capture_output=True,
                text=True,
                check=False,
            )
            print(child.stdout.rstrip())
            denials = child.stdout.count("DENIED")
            if denials != expected_denials[name] or child.returncode != 0:
                failures += 1
                print(f"  UNEXPECTED: {denials} denials for {name}\n{child.stderr}")

        _step("4. anyone holding the public keys can check a token offline")
        checks = [
            ("SupportBot", "write:refunds", 0),
            ("SupportBot", "delete:customer", 1),
            ("AnalyticsBot", "read:orders", 0),
            ("AnalyticsBot", "write:refunds", 1),
        ]
        for name, scope, expected in checks:
            done = cli("verify", "--scope", scope, token=tokens[name])
            said = (done.stdout or done.stderr).strip()
            print(f"  exit {done.returncode}: {said}")
            if done.returncode != expected:
                failures += 1
                print(f"  UNEXPECTED exit status, wanted {expected}")

        _step("5. a token cannot be widened by its holder: any change breaks the signature")
        head, body, signature = tokens["AnalyticsBot"].split(".")
        forged = f"{head}.{tokens['SupportBot'].split('.')[1]}.{signature}"
        done = cli("verify", "--scope", "write:refunds", token=forged)
        print(f"  exit {done.returncode}: {done.stderr.strip()}")
        if done.returncode != 1:
            failures += 1

    print("\ndemo finished:", "all outcomes as expected" if not failures else f"{failures} FAILED")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
