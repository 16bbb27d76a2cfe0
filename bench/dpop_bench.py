"""DPoP (RFC 9449) against bearer tokens, in the same FastAPI app: verify cost and requests/s.

    python bench/dpop_bench.py            # full run, about 40 s
    python bench/dpop_bench.py --quick    # about 15 s

Every DPoP request carries the same bound token and a fresh proof (signed
beforehand, outside the timing); every bearer request the same plain token.
Ratios are against the bearer path measured in the same run, interleaved.

1. Verify cost, in process: the server's work to admit one request.
   a. a request through the FastAPI app (ASGI, in process, ``require_scope``):
      the target row (<= 1.3x);
   b. the verification alone, token reused (the steady state: the token is a
      cache hit, the proof one signature check);
   c. the verification alone, a new token each request (one signature check
      against two);
   d. one signature check alone, against a bearer cache hit;
   e. the floor: a bearer request through the app, carrying the same headers
      (its DPoP header unread), plus one bare signature check of the proof's
      algorithm: what a perfect DPoP implementation would cost, measured with 1a;
   f. the DPoP request against that floor: what our checks cost besides the signature.
2. Requests/s through one real uvicorn worker serving every path (h11, asyncio),
   from an asyncio client on keep-alive connections: target DPoP >= 70% of bearer;
   plus DPoP with the replay cache in a SQLite store (shared by worker processes);
   the floor (a bearer route whose endpoint checks one signature, sent the same
   headers); DPoP against the floor. The floor's requests/s is also estimated
   from in-process figures (the notes): a worker's time per request is
   ``1 / bearer's requests/s``, and the floor adds one signature check (1d).

Targets are informational: a MISS never changes the exit status.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import math
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
SCOPE = "read:orders"
ALG = "ES256"  # the DPoP key's algorithm: DPoPKey's default
KEYS_ENV = "DPOP_BENCH_JWKS"
STATE_ENV = "DPOP_BENCH_STATE"


@dataclass(frozen=True)
class Plan:
    repeats: int  # interleaved repeats of each in-process series; the minimum is kept
    batch: int  # requests per repeat
    rounds: int  # interleaved HTTP rounds; the median is kept
    seconds: float  # per HTTP round
    connections: int


FULL = Plan(repeats=15, batch=1500, rounds=8, seconds=1.0, connections=32)
QUICK = Plan(repeats=5, batch=800, rounds=5, seconds=0.4, connections=32)


# --- the app: the same routes for both schemes ------------------------------------------------


def floor_check() -> Callable[[], bool]:
    """One bare signature check of the proof's algorithm (``PublicKey.verify``, as a proof's)."""
    from agentsudo_tokens import DPoPKey

    signing = DPoPKey.generate(ALG)._signing
    signing_input = b"h" * 300  # about a proof's header and payload
    signature = signing.sign(signing_input)
    public = signing.public
    return lambda: public.verify(signing_input, signature)


def build_app(verifier: Any, stored_proofs: Any = None) -> Any:
    """``/orders`` behind ``require_scope``; ``/floor/orders`` the same plus one signature check
    in the endpoint (the floor); ``/stored/orders`` the same with the replay cache in a store
    (``stored_proofs``), when given."""
    from fastapi import Depends, FastAPI

    from agentsudo_tokens.integrations.fastapi import require_scope

    app = FastAPI(openapi_url=None)
    body = {"order_id": "order_1", "total": 50}
    guard = require_scope(SCOPE, verifier=verifier)
    check = floor_check()

    @app.get("/orders")
    async def orders(_: Any = Depends(guard)) -> dict[str, Any]:  # noqa: B008
        return body

    @app.get("/floor/orders")
    async def floor_orders(_: Any = Depends(guard)) -> dict[str, Any]:  # noqa: B008
        if not check():
            raise RuntimeError("the floor's signature does not verify")
        return body

    if stored_proofs is not None:
        stored = require_scope(SCOPE, verifier=verifier, proofs=stored_proofs)

        @app.get("/stored/orders")
        async def stored_orders(_: Any = Depends(stored)) -> dict[str, Any]:  # noqa: B008
            return body

    return app


def app_from_env() -> Any:
    """The served app (a uvicorn ``--factory``): keys from ``$DPOP_BENCH_JWKS``."""
    from agentsudo_tokens import JwksFile, ProofVerifier, Verifier
    from agentsudo_tokens.state import open_store
    from agentsudo_tokens.state.replay import StoreReplayCache

    verifier = Verifier(JwksFile(os.environ[KEYS_ENV]))  # no store: revocation aside
    stored = ProofVerifier(replay=StoreReplayCache(open_store(os.environ[STATE_ENV])))
    return build_app(verifier, stored)


# --- 1. in process ----------------------------------------------------------------------------


@dataclass
class Row:
    name: str
    ours: float  # DPoP (or the floor), per request: ns (in process) or requests/s (HTTP)
    baseline: float  # bearer (or the floor), the same unit
    target: str = "(info)"
    ok: bool | None = None
    rounds: float | None = None  # HTTP: the median of the rounds' own ratios

    @property
    def ratio(self) -> float:
        return self.rounds if self.rounds is not None else self.ours / self.baseline


@contextmanager
def gc_off() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def best_of(series: dict[str, Callable[[], int]], repeats: int, per_run: int) -> dict[str, float]:
    """The minimum ns per request of each series, interleaved over the repeats."""
    best = dict.fromkeys(series, math.inf)
    order = list(series.items())
    for run in series.values():
        run()  # warm up
    with gc_off():
        for index in range(repeats):
            for name, run in order if index % 2 == 0 else reversed(order):
                best[name] = min(best[name], run() / per_run)
    return best


def _scope(headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/orders",
        "raw_path": b"/orders",
        "root_path": "",
        "query_string": b"",
        "headers": headers,
        "server": (HOST, 8000),
        "client": (HOST, 50000),
    }


Headers = list[tuple[bytes, bytes]]


def asgi_batch(
    app: Any, requests: Callable[[], list[Headers]], extra: Callable[[], bool] | None = None
) -> Callable[[], int]:
    """A series: one batch of requests through ``app`` (ASGI, in process), each after
    ``extra()`` when given (the floor's signature check); ns elapsed."""

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    def run() -> int:
        batch = requests()  # proofs signed before the clock starts
        statuses: list[int] = []

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        async def go() -> int:
            start = time.perf_counter_ns()
            for headers in batch:
                if extra is not None and not extra():
                    raise RuntimeError("the floor's signature does not verify")
                await app(_scope(headers), receive, send)
            return time.perf_counter_ns() - start

        elapsed = asyncio.run(go())
        if statuses != [200] * len(batch):
            raise RuntimeError(f"not every request was served: {set(statuses)}")
        return elapsed

    return run


def bench_in_process(plan: Plan, keys: Any) -> list[Row]:
    from agentsudo_tokens import DPoPKey, Issuer, ProofVerifier, Verifier

    issuer = Issuer(keys.signing_key())
    key = DPoPKey.generate(ALG)
    plain = issuer.issue("BenchBot", [SCOPE], ttl=3600).token
    bound = issuer.issue("BenchBot", [SCOPE], ttl=3600, jkt=key.jkt).token
    url = f"http://{HOST}:8000/orders"
    n = plan.batch
    rows: list[Row] = []

    # a. through the app
    app = build_app(Verifier(keys.public_keys()))
    host = (b"host", f"{HOST}:8000".encode())
    bearer_headers = [host, (b"authorization", f"Bearer {plain}".encode())]

    def dpop_requests() -> list[Headers]:
        return [
            [
                host,
                (b"authorization", f"DPoP {bound}".encode()),
                (b"dpop", key.proof("GET", url, token=bound).encode()),
            ]
            for _ in range(n)
        ]

    def floor_requests() -> list[Headers]:  # a bearer request with the same headers as DPoP's
        return [[*bearer_headers, (b"dpop", key.proof("GET", url, token=bound).encode())]] * n

    best = best_of(
        {
            "bearer": asgi_batch(app, lambda: [bearer_headers] * n),
            "dpop": asgi_batch(app, dpop_requests),
            "floor": asgi_batch(app, floor_requests, floor_check()),
        },
        plan.repeats,
        n,
    )
    ratio = best["dpop"] / best["bearer"]
    rows.append(Row("1a request through the FastAPI app (ASGI)", best["dpop"], best["bearer"],
                    "<= 1.3x", ratio <= 1.3))  # fmt: skip
    floor = Row("1e the floor: bearer + 1 signature check", best["floor"], best["bearer"])
    over = Row("1f DPoP request (1a) against the floor", best["dpop"], best["floor"])

    # b. the verification alone, the token reused (cached); c. a new token each time
    def verify_series(fresh: bool, dpop: bool) -> Callable[[], int]:
        def run() -> int:
            verifier = Verifier(keys.public_keys(), cache_size=0 if fresh else 4096)
            proofs = ProofVerifier()
            token = bound if dpop else plain
            if fresh:
                tokens = [
                    issuer.issue("BenchBot", [SCOPE], ttl=3600, jkt=key.jkt if dpop else None).token
                    for _ in range(n)
                ]
            else:
                tokens = [token] * n
                verifier.verify(token)
            pairs = [(t, [key.proof("GET", url, token=t)] if dpop else []) for t in tokens]
            start = time.perf_counter_ns()
            for t, found in pairs:
                claims = verifier.verify(t)
                if dpop:
                    proofs.check_request(
                        claims, scheme="DPoP", token=t, proofs=found, method="GET", url=url
                    )
            return time.perf_counter_ns() - start

        return run

    for key_name, label, fresh in (
        ("1b", "verify only, token reused (a cache hit)", False),
        ("1c", "verify only, a new token each request", True),
    ):
        best = best_of(
            {"bearer": verify_series(fresh, False), "dpop": verify_series(fresh, True)},
            max(3, plan.repeats // 2),
            n,
        )
        rows.append(Row(f"{key_name} {label}", best["dpop"], best["bearer"]))

    # d. the floor: one signature check of the proof's algorithm, against a bearer cache hit
    signing_input, signature = b"h." * 200, key._signing.sign(b"h." * 200)
    public = key._signing.public

    def signature_series() -> int:
        start = time.perf_counter_ns()
        for _ in range(n):
            public.verify(signing_input, signature)
        return time.perf_counter_ns() - start

    verifier = Verifier(keys.public_keys())
    verifier.verify(plain)

    def cached_series() -> int:
        start = time.perf_counter_ns()
        for _ in range(n):
            verifier.verify(plain)
        return time.perf_counter_ns() - start

    best = best_of({"bearer": cached_series, "dpop": signature_series}, plan.repeats, n)
    rows.append(Row(f"1d one {key.alg} signature check alone", best["dpop"], best["bearer"]))
    return [*rows, floor, over]


# --- 2. requests/s through uvicorn ------------------------------------------------------------


async def _connection(requests: Iterator[bytes], port: int, stop_at: float) -> tuple[int, int]:
    reader, writer = await asyncio.open_connection(HOST, port)
    served = errors = 0
    try:
        while time.perf_counter() < stop_at:
            writer.write(next(requests))
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            if length:
                await reader.readexactly(length)
            served += 1
            errors += head[9:12] != b"200"
    finally:
        writer.close()
    return served, errors


async def _load(requests: Iterator[bytes], port: int, seconds: float, connections: int) -> float:
    started = time.perf_counter()
    results = await asyncio.gather(
        *(_connection(requests, port, started + seconds) for _ in range(connections))
    )
    elapsed = time.perf_counter() - started
    if sum(e for _, e in results):
        raise RuntimeError(f"{sum(e for _, e in results)} answers were not 200")
    return sum(s for s, _ in results) / elapsed


def _request(port: int, path: str, authorization: str, proof: str | None = None) -> bytes:
    extra = f"DPoP: {proof}\r\n" if proof else ""
    return (
        f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nAuthorization: {authorization}\r\n"
        f"{extra}Accept: application/json\r\n\r\n"
    ).encode()


def _repeat(item: bytes) -> Iterator[bytes]:
    while True:
        yield item


@contextmanager
def _uvicorn(port: int, env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    args = [sys.executable, "-m", "uvicorn", "dpop_bench:app_from_env", "--factory"]
    args += ["--app-dir", str(Path(__file__).resolve().parent), "--host", HOST]
    args += ["--port", str(port), "--http", "h11", "--loop", "asyncio"]
    args += ["--no-access-log", "--log-level", "warning"]
    process = subprocess.Popen(args, env=env)
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def _wait_until_up(port: int, process: subprocess.Popen[bytes], token: str) -> None:
    deadline = time.monotonic() + 30
    request = urllib.request.Request(
        f"http://{HOST}:{port}/orders", headers={"Authorization": f"Bearer {token}"}
    )
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"uvicorn exited with {process.returncode}")
        try:
            with urllib.request.urlopen(request, timeout=1) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("uvicorn did not come up")


def bench_http(plan: Plan, keys: Any, work: Path) -> list[Row]:
    from agentsudo_tokens import DPoPKey, Issuer

    issuer = Issuer(keys.signing_key())
    key = DPoPKey.generate(ALG)
    plain = issuer.issue("BenchBot", [SCOPE], ttl=3600).token
    bound = issuer.issue("BenchBot", [SCOPE], ttl=3600, jkt=key.jkt).token
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTSUDO_")}
    env[KEYS_ENV] = str(keys.jwks_path)
    env[STATE_ENV] = f"sqlite:///{work / 'replay.db'}"
    with _uvicorn(port, env) as server:
        _wait_until_up(port, server, plain)
        bearer = _request(port, "/orders", f"Bearer {plain}")

        def dpop(path: str, count: int) -> Iterator[bytes]:
            url = f"http://{HOST}:{port}{path}"
            made = [
                _request(port, path, f"DPoP {bound}", key.proof("GET", url, token=bound))
                for _ in range(count)
            ]
            return iter(made)  # each proof once: running out is an error, not a replay

        # the floor: a bearer request with the same headers as DPoP's (its proof unread)
        proof = key.proof("GET", f"http://{HOST}:{port}/floor/orders", token=bound)
        floor = _request(port, "/floor/orders", f"Bearer {plain}", proof)

        def measure(kind: str, budget: int) -> float:
            if kind in ("bearer", "floor"):
                request = bearer if kind == "bearer" else floor
                return asyncio.run(_load(_repeat(request), port, plan.seconds, plan.connections))
            path = "/orders" if kind == "dpop" else "/stored/orders"
            return asyncio.run(_load(dpop(path, budget), port, plan.seconds, plan.connections))

        ceiling = asyncio.run(_load(_repeat(bearer), port, 0.5, plan.connections))  # warm-up
        budget = int(ceiling * plan.seconds * 1.5) + 4 * plan.connections
        for kind in ("dpop", "stored", "floor"):
            measure(kind, budget)
        # dpop next to bearer and to the floor in every round, whichever way it runs
        samples: dict[str, list[float]] = {"bearer": [], "dpop": [], "floor": [], "stored": []}
        for index in range(plan.rounds):
            order = list(samples) if index % 2 == 0 else list(reversed(samples))
            for kind in order:
                samples[kind].append(measure(kind, budget))
    rps = {kind: statistics.median(values) for kind, values in samples.items()}

    def row(name: str, ours: str, baseline: str, target: str = "(info)") -> Row:
        """A ratio of the rounds' own ratios: what the machine did meanwhile weighs on both."""
        ratios = [a / b for a, b in zip(samples[ours], samples[baseline], strict=True)]
        ratio = statistics.median(ratios)
        ok = None if target == "(info)" else ratio >= 0.7
        return Row(name, rps[ours], rps[baseline], target, ok, ratio)

    return [
        row("2a requests/s, DPoP (replay cache in memory)", "dpop", "bearer", ">= 70%"),
        row("2b requests/s, DPoP (replay cache in SQLite)", "stored", "bearer"),
        row("2c requests/s, the floor: bearer + 1 check", "floor", "bearer"),
        row("2d requests/s, DPoP (2a) against the floor", "dpop", "floor"),
    ]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


# --- report -----------------------------------------------------------------------------------


def report(rows: list[Row], plan: Plan, elapsed: float) -> None:
    import fastapi
    import uvicorn

    print(f"DPoP vs bearer, in the same FastAPI app ({'quick' if plan is QUICK else 'full'} run)")
    print(f"{'measurement':<46} {'measured':>11} {'baseline':>11} {'ratio':>7}  target")
    for row in rows:
        if row.name.startswith("2"):
            ours, base = f"{row.ours:.0f}/s", f"{row.baseline:.0f}/s"
            ratio = f"{row.ratio:.0%}"
        else:
            ours, base = f"{row.ours / 1e3:.1f} us", f"{row.baseline / 1e3:.1f} us"
            ratio = f"{row.ratio:.2f}x"
        verdict = "" if row.ok is None else ("ok" if row.ok else "MISS")
        print(f"{row.name:<46} {ours:>11} {base:>11} {ratio:>7}  {row.target} {verdict}")
    by = {row.name[:2]: row for row in rows}
    print(floor_summary(by))
    added = by["1b"]
    print(
        "notes: 1a-1f per request, minimum over interleaved repeats; 2a-2d requests/s. The "
        "baseline is the bearer path (the same app or verifier with a plain token), except "
        "in 1f and 2d: the floor (1e, 2c). DPoP adds one "
        f"{ALG} signature check per request ({(added.ours - added.baseline) / 1e3:.0f} us "
        "here with the checks around it, 1b; the signature alone, 1d), which a reused bearer "
        "token does not pay at all (a cache hit), hence 1b's ratio; against a bearer token "
        "verified afresh (1c) it is the second of two signature checks. 2a-2d: medians "
        f"of {plan.rounds} interleaved rounds x {plan.seconds:g} s (ratios: the median of "
        f"each round's own), {plan.connections} "
        "keep-alive connections, one uvicorn worker (h11, asyncio) on "
        f"{HOST}, every DPoP request with a fresh proof signed beforehand. "
        f"Python {platform.python_version()}, fastapi {fastapi.__version__}, "
        f"uvicorn {uvicorn.__version__}, {os.cpu_count()} CPUs; {elapsed:.0f} s."
    )


def floor_summary(by: dict[str, Row]) -> str:
    """What the rows say about the floor, in words: what a perfect DPoP would cost, and ours."""
    request, floor, signature = by["1a"], by["1e"], by["1d"]
    bearer_rps, floor_rps = by["2a"].baseline, by["2c"].ours
    over_floor = by["2d"].ratio  # DPoP's requests/s as a share of the floor's
    # a worker's time per request is 1/requests-per-second; the floor adds one check (1d)
    estimate = 1 / (1 / bearer_rps + signature.ours / 1e9)
    return (
        f"floor: in process, a DPoP request costs {(request.ours - request.baseline) / 1e3:.1f}"
        f" us more than a bearer one (1a), of which {(floor.ours - floor.baseline) / 1e3:.1f} us"
        f" is one signature check (1e) and {(request.ours - floor.ours) / 1e3:.1f} us our checks"
        f" around it (1f); no DPoP can do better than {floor.ratio:.2f}x (target <= 1.3x). Over"
        f" HTTP, the floor serves {by['2c'].ratio:.0%} of bearer's requests/s (2c; target >="
        f" 70%), DPoP {over_floor:.0%} of the floor's (2d): about"
        f" {(1 / over_floor - 1) / floor_rps * 1e6:.0f} us per request over it. Estimated from"
        f" in-process figures instead (1 / (1/bearer's requests/s + one check, 1d)): a floor of"
        f" {estimate:.0f}/s, {estimate / bearer_rps:.0%} of bearer, DPoP"
        f" {by['2a'].ours / estimate:.0%} of it."
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run, about 15 s")
    plan = QUICK if parser.parse_args().quick else FULL
    from agentsudo_tokens import KeyDirectory

    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="agentsudo-dpop-bench-") as work, ExitStack():
        keys = KeyDirectory.init(Path(work) / "keys")
        rows = bench_in_process(plan, keys)
        rows += bench_http(plan, keys, Path(work))
    report(rows, plan, time.monotonic() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
