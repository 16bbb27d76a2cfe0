"""Three real processes on loopback: an issuer, a billing service, an agent.

    python examples/services/run_demo.py

1. The issuer CLI makes a key and serves the public keys over HTTP
   (``agentsudo keys serve``).
2. The billing service (uvicorn) verifies tokens with those keys, fetched over HTTP.
3. The issuer CLI mints a token; the agent process starts with it in
   ``AGENTSUDO_TOKEN`` and calls the service: reads and a refund succeed, a
   delete is refused (403), a token edited to add a scope is rejected (401).

Everything runs in a throwaway directory on 127.0.0.1 and stops at the end.
Exit status 0 when every outcome is the expected one. It needs the
``services`` extra (FastAPI, uvicorn, httpx): ``pip install '.[services]'``
from the repository root; without it, it says so in one line.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

HERE = Path(__file__).resolve().parent
HOST = "127.0.0.1"
INSTALL = "pip install '.[services]' (from the repository root)"
NEEDS = ("fastapi", "uvicorn", "httpx")  # the billing service, its server, the agent's client


def check_installed() -> None:
    """Stop with one line naming the install command if a package the demo runs is missing."""
    missing = [name for name in NEEDS if importlib.util.find_spec(name) is None]
    if missing:
        raise SystemExit(f"run_demo.py needs {', '.join(missing)}: {INSTALL}")


def _agentsudo() -> str:
    """The installed console script next to this Python, else the one on PATH."""
    beside = Path(sys.executable).parent / "agentsudo"
    found = str(beside) if beside.exists() else shutil.which("agentsudo")
    if found is None:
        raise SystemExit(f"agentsudo is not installed: {INSTALL}")
    return found


def free_port() -> int:
    """A port free on loopback right now."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def wait_until_up(url: str, process: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """Poll ``url`` until it answers 200; fail if the process dies or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not come up within {timeout:.0f}s")


@contextmanager
def serving(args: list[str], ready_url: str, env: dict[str, str]) -> Iterator[None]:
    """Run a server process until the block ends; it is always stopped."""
    process = subprocess.Popen(
        args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=HERE
    )
    try:
        wait_until_up(ready_url, process)
        yield
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def _run(args: list[str], env: dict[str, str], shown: str) -> str:
    print(f"$ {shown}")
    done = subprocess.run(args, env=env, capture_output=True, text=True, check=True, timeout=60)
    return done.stdout


def main() -> int:
    check_installed()
    with tempfile.TemporaryDirectory(prefix="agentsudo-services-") as work:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTSUDO_")}
        env["AGENTSUDO_KEYS_DIR"] = str(Path(work) / "keys")
        jwks_port, billing_port = free_port(), free_port()
        jwks_url = f"http://{HOST}:{jwks_port}/.well-known/jwks.json"
        billing_url = f"http://{HOST}:{billing_port}"

        print("== the issuer: a signing key, its public keys served over HTTP")
        _run([_agentsudo(), "keys", "init"], env, "agentsudo keys init")
        print(f"$ agentsudo keys serve --port {jwks_port} &")
        with serving([_agentsudo(), "keys", "serve", "--port", str(jwks_port)], jwks_url, env):
            print(f"   public keys at {jwks_url} (only jwks.json: never the key directory)")
            print("== the billing service: uvicorn, keys from that URL, audience billing")
            service_env = dict(env, AGENTSUDO_JWKS=jwks_url, AGENTSUDO_AUDIENCE="billing")
            uvicorn = [sys.executable, "-m", "uvicorn", "billing_service:app", "--app-dir"]
            uvicorn += [str(HERE), "--host", HOST, "--port", str(billing_port), "--no-access-log"]
            with serving(uvicorn, f"{billing_url}/healthz", service_env):
                print(f"   listening at {billing_url}")
                print("== the agent: a token from the issuer CLI, in AGENTSUDO_TOKEN")
                token = _run(
                    [_agentsudo(), "issue", "--agent", "SupportBot"]
                    + ["--scopes", "read:orders,write:refunds", "--aud", "agentsudo"]
                    + ["--aud", "billing", "--ttl", "5m"],
                    env,
                    "agentsudo issue --agent SupportBot --scopes read:orders,write:refunds "
                    "--aud agentsudo --aud billing --ttl 5m",
                ).strip()
                agent_env = dict(env, AGENTSUDO_TOKEN=token, AGENTSUDO_JWKS=jwks_url)
                print(f"$ AGENTSUDO_TOKEN=<token> python agent.py {billing_url}", flush=True)
                done = subprocess.run(
                    [sys.executable, str(HERE / "agent.py"), billing_url],
                    env=agent_env,
                    timeout=60,
                    check=False,
                )
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
