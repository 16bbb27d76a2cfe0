"""What a token's limits cost a guarded call: constraints checked, budgets debited.

    python bench/limits_bench.py            # full run
    python bench/limits_bench.py --quick    # CI: a few seconds

Every figure is against a baseline measured in the same run:

- an allowed ``@sudo`` call whose token carries three constraints on its
  arguments (``amount<=100 currency in USD,EUR len(order_id)<=64``) against the
  same call with a token without limits (minimum per call over interleaved
  repeats, the garbage collector off); target: at most +1 us net;
- ``@sudo`` calls that each debit a budget (``calls`` and a total of
  ``amount``), per second, in 1 and in 8 processes at once, SQLite and Redis,
  against a plain store write (``Store.put``) in the same setting; targets with 8
  processes: >= 2,000/s SQLite, >= 5,000/s Redis.

Targets (issue 11) are informational: a miss prints MISS and never fails the run.
A throwaway ``redis-server`` is started on a free port (its rows skip without one).
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from store_bench import flush, per_call, redis_server  # noqa: E402

from agentsudo_tokens import Agent, Issuer, JwksFile, KeyDirectory, Verifier, sudo  # noqa: E402
from agentsudo_tokens.state import open_store  # noqa: E402
from agentsudo_tokens.tokens.limits import Limits  # noqa: E402

perf_counter_ns = time.perf_counter_ns
CONSTRAINTS = "write:refunds amount<=100 currency in USD,EUR len(order_id)<=64"
BUDGET = "write:refunds amount=1000000000 calls=1000000000"


@sudo(scope="write:refunds")
def process_refund(order_id: str, amount: int, currency: str = "USD") -> int:
    return amount


def calling(agent: Agent) -> Callable[[int], int]:
    def run(n: int) -> int:
        with agent.start_session():
            call = process_refund
            start = perf_counter_ns()
            for _ in range(n):
                call("o1", 50, "USD")
            return perf_counter_ns() - start

    return run


def bench_constraints(issuer: Issuer, verifier: Verifier, repeats: int, n: int) -> float:
    plain = Agent.from_token(issuer.issue("Bot", ["write:refunds"]).token, verifier=verifier)
    limits = Limits.parse([CONSTRAINTS])
    limited = Agent.from_token(
        issuer.issue("Bot", ["write:refunds"], limits=limits).token, verifier=verifier
    )
    best = per_call({"plain": calling(plain), "limits": calling(limited)}, repeats, n)
    net = (best["limits"] - best["plain"]) / 1000
    print("an allowed @sudo call, per call (minimum over interleaved repeats)")
    print(f"  without limits        {best['plain'] / 1000:8.3f} us")
    print(f"  three constraints     {best['limits'] / 1000:8.3f} us")
    verdict = "PASS" if net <= 1.0 else "MISS"
    print(f"  net                   {net:+8.3f} us   (target <= +1 us: {verdict})\n")
    return net


def _worker(job: tuple[str, str, str, str, int]) -> float:
    """In a worker process: ``count`` debiting calls (or plain writes); the seconds taken."""
    kind, jwks, url, token, count = job
    store = open_store(url)
    if kind == "write":
        key = f"bench:{multiprocessing.current_process().pid}"
        start = time.perf_counter()
        for index in range(count):
            store.put(key, str(index), expires_at=time.time() + 600)
        return time.perf_counter() - start
    agent = Agent.from_token(token, verifier=Verifier(JwksFile(jwks), store=store))
    with agent.start_session():
        start = time.perf_counter()
        for _ in range(count):
            process_refund("o1", 1, "USD")
        return time.perf_counter() - start


def debits(jwks: str, url: str, token: str, count: int, processes: int, kind: str) -> float:
    """Calls (or writes) per second, ``processes`` at once, each doing ``count``."""
    context = multiprocessing.get_context("spawn")
    with context.Pool(processes) as pool:
        pool.map(_worker, [(kind, jwks, url, token, 5)] * processes)  # started and warm
        start = time.perf_counter()
        pool.map(_worker, [(kind, jwks, url, token, count)] * processes)
        elapsed = time.perf_counter() - start
    return count * processes / elapsed


def bench_budgets(root: Path, issuer: Issuer, jwks: str, count: int) -> None:
    try:
        import agentsudo_tokens.state.budgets  # noqa: F401
    except ImportError:
        print("budget debits: skipped: this version has no state.budgets")
        return
    limits = Limits.parse([], budgets=[BUDGET])
    token = issuer.issue("Bot", ["write:refunds"], limits=limits).token
    targets = {"sqlite": 2000, "redis": 5000}
    print("budget debit per @sudo call, calls/s (against a plain store write, same setting)")
    print(f"  {'store':8} {'procs':>5} {'debits/s':>10} {'writes/s':>10} {'ratio':>6}")
    with redis_server(root) as redis_url:
        urls = {"sqlite": f"sqlite:///{root / 'state.db'}", "redis": redis_url}
        for name, url in urls.items():
            if url is None:
                print(f"  {name:8} skipped: no redis-server")
                continue
            for processes in (1, 8):
                flush(url)
                spent = debits(jwks, url, token, count, processes, "debit")
                wrote = debits(jwks, url, token, count, processes, "write")
                verdict = ""
                if processes == 8:
                    ok = spent >= targets[name]
                    verdict = f"  target >= {targets[name]}/s: {'PASS' if ok else 'MISS'}"
                row = (
                    f"  {name:8} {processes:>5} {spent:>10.0f} {wrote:>10.0f} {spent / wrote:>6.2f}"
                )
                print(row + verdict)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="a short run, for CI")
    options = parser.parse_args()
    repeats, n, count = (7, 20000, 300) if options.quick else (21, 100000, 2000)
    print(f"python {sys.version.split()[0]}, {multiprocessing.cpu_count()} CPUs\n")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        keys = KeyDirectory.init(root / "keys")
        issuer = Issuer(keys.signing_key())
        verifier = Verifier(JwksFile(keys.jwks_path))
        bench_constraints(issuer, verifier, repeats, n)
        bench_budgets(root, issuer, str(keys.jwks_path), count)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
