"""A separate process for the multi-process store tests (run by the tests, not collected).

python tests/store_worker.py verifier STORE_URL JWKS_PATH
    reads lines: "verify TOKEN" -> "ok JTI" or "err ErrorClass message";
    "prepare TOKEN" -> "ready", then "go AT" -> at wall-clock time AT, the same
    answer as verify (so that racing processes start together);
    "quit".
python tests/store_worker.py elevate STORE_URL JWKS_PATH TOKEN TIMEOUT
    calls a guarded refund(order_id="o-77", amount=5000) as the token's agent, with
    on_deny=ask(...); prints "proceeded: ..." or "refused: ...".
"""

from __future__ import annotations

import sys
import time


def _answer(verifier: object, token: str) -> str:
    from agentsudo_tokens.errors import AgentSudoError

    try:
        claims = verifier.verify(token)  # type: ignore[attr-defined]
    except AgentSudoError as exc:
        return f"err {type(exc).__name__} {exc}"
    return f"ok {claims.jti}"


def verifier_loop(store_url: str, jwks: str) -> None:
    from agentsudo_tokens import JwksFile, Verifier
    from agentsudo_tokens.state import open_store

    verifier = Verifier(JwksFile(jwks), store=open_store(store_url))
    prepared = ""
    print("started", flush=True)
    for line in sys.stdin:
        command, _, argument = line.strip().partition(" ")
        if command == "verify":
            print(_answer(verifier, argument), flush=True)
        elif command == "prepare":
            prepared = argument
            print("ready", flush=True)
        elif command == "go":  # "go AT": start at that wall-clock instant, all together
            start = float(argument)
            time.sleep(max(0.0, start - time.time() - 0.002))
            while time.time() < start:
                pass
            print(_answer(verifier, prepared), flush=True)
        elif command == "quit":
            return


def elevate(store_url: str, jwks: str, token: str, timeout: float) -> None:
    from agentsudo_tokens import Agent, JwksFile, PermissionDeniedError, Verifier, sudo
    from agentsudo_tokens.guard.elevation import ask

    @sudo(scope="write:refunds", on_deny=ask(timeout=timeout, store=store_url, poll_interval=0.05))
    def refund(order_id: str, amount: int) -> str:
        return f"refunded {amount} on {order_id}"

    agent = Agent.from_token(token, verifier=Verifier(JwksFile(jwks)))
    with agent.start_session():
        try:
            print(f"proceeded: {refund('o-77', amount=5000)}", flush=True)
        except PermissionDeniedError as exc:
            print(f"refused: {exc}", flush=True)


if __name__ == "__main__":
    mode, *arguments = sys.argv[1:]
    if mode == "verifier":
        verifier_loop(*arguments)
    elif mode == "elevate":
        url, jwks_path, presented, seconds = arguments
        elevate(url, jwks_path, presented, float(seconds))
    else:
        raise SystemExit(f"unknown mode {mode!r}")
