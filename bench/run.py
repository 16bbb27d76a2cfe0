"""Benchmarks for agentsudo-tokens: the ``@sudo`` guard, the verifier and the CLI.

    python bench/run.py            # full run, about 25 s (well under 3 minutes on 2 cores)
    python bench/run.py --quick    # short run for CI, under 30 s

Each measurement is compared with a baseline measured in the same run,
interleaved with it. Micro-benchmarks take the minimum per-call time over
several repeats with the garbage collector off; process rows take the median
wall time of interleaved runs. Targets are informational: a miss prints MISS
and never makes the exit status non-zero (only a crash of a section does).
"""

from __future__ import annotations

import argparse
import functools
import gc
import importlib.metadata
import logging
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from itertools import repeat
from pathlib import Path
from typing import Any

import jwt

from agentsudo_tokens import (
    Agent,
    Issuer,
    KeyDirectory,
    PermissionDeniedError,
    Verifier,
    sudo,
)

perf_counter_ns = time.perf_counter_ns
AUDIENCE = ISSUER = "agentsudo"  # the defaults of Issuer and Verifier
REQUIRED = ["exp", "iat", "nbf", "iss", "aud", "sub", "jti"]
ORDER, AMOUNT = "order_123", 50


@dataclass(frozen=True)
class Plan:
    """How long to measure."""

    name: str
    repeats: int  # interleaved repeats of each micro-benchmark; the minimum is kept
    budget: float  # seconds per repeat for the slowest series of a group
    process_runs: int  # runs of each command; the median is kept
    pool: int  # distinct tokens for the cold-verify loops


QUICK = Plan("quick", repeats=7, budget=0.005, process_runs=3, pool=64)
FULL = Plan("full", repeats=31, budget=0.04, process_runs=10, pool=256)


def _unit() -> str:
    encoding = getattr(sys.stdout, "encoding", None) or "ascii"
    try:
        "µ".encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return "us"
    return "µs"


US = _unit()


@dataclass
class Row:
    """One line of the result table. Times in nanoseconds."""

    key: str
    name: str
    ours: float | None
    baseline: float | None
    ratio: float | None
    target: str
    ok: bool | None
    process: bool = False
    error: str | None = None


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    baselines: list[str] = field(default_factory=list)
    failed: bool = False


# --- timing ---------------------------------------------------------------

Series = Callable[[int], int]  # runs n operations, returns the elapsed nanoseconds


def guarded_calls(func: Callable[[str, int], Any]) -> Series:
    """``func(ORDER, AMOUNT)`` n times."""

    def run(n: int) -> int:
        a, b = ORDER, AMOUNT
        loop = repeat(None, n)
        start = perf_counter_ns()
        for _ in loop:
            func(a, b)
        return perf_counter_ns() - start

    return run


def caught_calls(func: Callable[[str, int], Any], error: type[BaseException]) -> Series:
    """``func(ORDER, AMOUNT)`` n times inside ``try: ... except error: pass``."""

    def run(n: int) -> int:
        a, b = ORDER, AMOUNT
        loop = repeat(None, n)
        start = perf_counter_ns()
        for _ in loop:
            try:
                func(a, b)
            except error:
                pass
        return perf_counter_ns() - start

    return run


def token_calls(func: Callable[[str], Any], tokens: list[str]) -> Series:
    """``func(token)`` n times, cycling through ``tokens``."""

    def run(n: int) -> int:
        sequence = (tokens * (n // len(tokens) + 1))[:n]
        start = perf_counter_ns()
        for token in sequence:
            func(token)
        return perf_counter_ns() - start

    return run


@contextmanager
def gc_off() -> Iterator[None]:
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def measure(series: dict[str, Series], plan: Plan) -> dict[str, float]:
    """The minimum nanoseconds per operation of each series, interleaved over the repeats.

    Every series runs the same number of operations per repeat, so loop
    overhead cancels when two of them are subtracted.
    """
    per_op: dict[str, float] = {}
    for name, run in series.items():
        run(50)  # warm up: caches, memo tables, specialization
        n = 50
        while True:
            elapsed = run(n)
            if elapsed >= 2_000_000 or n >= 1 << 22:
                break
            n *= 4
        per_op[name] = elapsed / n
    n = max(50, int(plan.budget * 1e9 / max(per_op.values())))
    best = dict.fromkeys(series, math.inf)
    order = list(series.items())
    with gc_off():
        for index in range(plan.repeats):
            for name, run in order if index % 2 == 0 else reversed(order):
                best[name] = min(best[name], run(n) / n)
    return best


# --- the baseline guard -----------------------------------------------------

_baseline_granted: ContextVar[frozenset[str] | None] = ContextVar("bench_granted", default=None)


def baseline_sudo(scope: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The least a guard can do: a ContextVar look-up, ``scope in frozenset``, the call."""

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        get = _baseline_granted.get

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            granted = get()
            if granted is None or scope not in granted:
                raise PermissionError(f"missing scope {scope!r}")
            return func(*args, **kwargs)

        return wrapper

    return decorate


@contextmanager
def baseline_session(scopes: list[str]) -> Iterator[None]:
    reset = _baseline_granted.set(frozenset(scopes))
    try:
        yield
    finally:
        _baseline_granted.reset(reset)


def process_refund(order_id: str, amount: int) -> int:
    """The guarded tool: as cheap as a function gets."""
    return amount


def _guarded(decorator: Callable[[Callable[..., Any]], Callable[..., Any]]) -> Callable[..., Any]:
    return decorator(lambda order_id, amount: amount)


# --- fixtures -----------------------------------------------------------------


@dataclass
class Keys:
    alg: str
    directory: Path
    issuer: Issuer
    public: Any  # the cryptography public key object, for PyJWT

    def mint(self, scopes: str) -> str:
        return self.issuer.issue("SupportBot", scopes).token

    def verifier(self, **options: Any) -> Verifier:
        return Verifier(KeyDirectory(self.directory).public_keys(), **options)


def make_keys(root: Path, alg: str) -> Keys:
    directory = KeyDirectory.init(root / alg.lower(), alg=alg)
    signing = directory.signing_key()
    public = directory.public_keys()[signing.kid].key
    return Keys(alg, directory.path, Issuer(signing), public)


def _net(value: float, plain: float) -> float:
    return value - plain


def _fmt_time(ns: float | None, process: bool) -> str:
    if ns is None:
        return "-"
    if process:
        return f"{ns / 1e6:.1f} ms"
    us = ns / 1e3
    if abs(us) < 10:
        return f"{us:.3f} {US}"
    return f"{us:.1f} {US}"


def _logger_state(name: str) -> str:
    logger = logging.getLogger(name)
    handlers = [type(h).__name__ for h in logger.handlers]
    root = [type(h).__name__ for h in logging.getLogger().handlers]
    return (
        f"level {logging.getLevelName(logger.level)} "
        f"(effective {logging.getLevelName(logger.getEffectiveLevel())}), "
        f"handlers {handlers or 'none'}, root handlers {root or 'none'}"
    )


# --- 1. the guard ---------------------------------------------------------------


def bench_guard(report: Report, plan: Plan, eddsa: Keys) -> None:
    token_verifier = eddsa.verifier()
    plain = process_refund

    def allowed_group(key: str, label: str, agent: Agent, target_us: float) -> None:
        ours = _guarded(sudo(scope="read:orders"))
        base = _guarded(baseline_sudo("read:orders"))
        with agent.start_session(), baseline_session(["read:orders", "write:refunds"]):
            assert ours(ORDER, AMOUNT) == AMOUNT and base(ORDER, AMOUNT) == AMOUNT
            best = measure(
                {
                    "plain": guarded_calls(plain),
                    "ours": guarded_calls(ours),
                    "baseline": guarded_calls(base),
                },
                plan,
            )
        ours_net = _net(best["ours"], best["plain"])
        base_net = _net(best["baseline"], best["plain"])
        report.rows.append(
            Row(
                key,
                label,
                ours_net,
                base_net,
                ours_net / base_net if base_net > 0 else None,
                f"net <= {target_us:g} {US}",
                ours_net <= target_us * 1e3,
            )
        )

    exact = ["read:orders", "write:refunds"]
    wildcard = ["read:*", "write:refunds"]
    allowed_group(
        "1a", "@sudo allowed, exact scope, Agent session", Agent("SupportBot", exact), 0.5
    )
    allowed_group(
        "1b",
        "@sudo allowed, exact scope, token session",
        Agent.from_token(eddsa.mint(" ".join(exact)), verifier=token_verifier),
        0.5,
    )
    allowed_group(
        "1c", "@sudo allowed, read:* grant, Agent session", Agent("SupportBot", wildcard), 1.0
    )
    allowed_group(
        "1d",
        "@sudo allowed, read:* grant, token session",
        Agent.from_token(eddsa.mint(" ".join(wildcard)), verifier=token_verifier),
        1.0,
    )

    # The denied path: the agent holds read:orders, the tool needs write:refunds.
    state = _logger_state("agentsudo")
    denied_group(report, plan, "1e", "@sudo denied, PermissionDeniedError caught", f"net <= 5 {US}")
    audit_logger = logging.getLogger("agentsudo")
    level = audit_logger.level
    audit_logger.setLevel(logging.ERROR)  # denials are WARNING: no audit event is built
    try:
        denied_group(report, plan, "1f", "@sudo denied, `agentsudo` logger at ERROR", "(info)")
    finally:
        audit_logger.setLevel(level)
    report.baselines.append(
        "1a-1f  hand-written wrapper: ContextVar.get, `scope in frozenset`, call "
        "(raises PermissionError when denied); ours and it are both net of an undecorated "
        "call, ratio = ours / baseline"
    )
    report.notes.append(f"1e: the `agentsudo` logger during the denied run: {state}")
    report.notes.append(
        "1f: the same denial with the `agentsudo` logger set to ERROR, so no audit event is "
        "built: the difference from 1e is the cost of the denial's audit event"
    )


def denied_group(report: Report, plan: Plan, key: str, label: str, target: str) -> None:
    """A denied call, caught: the agent holds read:orders, the tool needs write:refunds."""
    plain = process_refund
    ours = _guarded(sudo(scope="write:refunds"))
    base = _guarded(baseline_sudo("write:refunds"))
    with Agent("SupportBot", ["read:orders"]).start_session(), baseline_session(["read:orders"]):
        for guarded, error in ((ours, PermissionDeniedError), (base, PermissionError)):
            try:
                guarded(ORDER, AMOUNT)
            except error:
                pass
            else:
                raise AssertionError("the denied path did not raise")
        best = measure(
            {
                "plain": caught_calls(plain, PermissionDeniedError),
                "ours": caught_calls(ours, PermissionDeniedError),
                "baseline": caught_calls(base, PermissionError),
            },
            plan,
        )
    ours_net = _net(best["ours"], best["plain"])
    base_net = _net(best["baseline"], best["plain"])
    report.rows.append(
        Row(
            key,
            label,
            ours_net,
            base_net,
            ours_net / base_net if base_net > 0 else None,
            target,
            ours_net <= 5_000 if key == "1e" else None,
        )
    )


# --- 2. the original library ----------------------------------------------------


def bench_original(report: Report, plan: Plan) -> None:
    try:
        version = importlib.metadata.version("agentsudo")
        import agentsudo as original  # imported late: its import configures logging
    except (ImportError, importlib.metadata.PackageNotFoundError):
        for key, label in (("2a", "exact scope"), ("2b", "read:* grant")):
            report.rows.append(
                Row(key, f"vs agentsudo 0.3.2, {label}", None, None, None, "-", None)
            )
        report.notes.append("2: skipped: pip install agentsudo==0.3.2")
        return

    their_logger = logging.getLogger("agentsudo")
    if their_logger.isEnabledFor(logging.DEBUG):
        their_logger.setLevel(logging.INFO)  # what a user would do to keep DEBUG quiet
        silenced = "set the `agentsudo` logger to INFO to keep its DEBUG audit lines quiet"
    else:
        silenced = "nothing to silence, no logging setting changed by the benchmark"
    report.notes.append(
        f"2: agentsudo {version} logs every allowed call: it builds a JSON line "
        "(datetime.utcnow + json.dumps) and calls logger.log(DEBUG), then looks up cloud "
        "telemetry; its import runs logging.basicConfig(level=WARNING), so the DEBUG line is "
        f"dropped ({silenced}); logger now: {_logger_state('agentsudo')}"
    )

    plain = process_refund
    for key, label, scopes in (
        ("2a", "exact scope", ["read:orders", "write:refunds"]),
        ("2b", "read:* grant", ["read:*", "write:refunds"]),
    ):
        ours = _guarded(sudo(scope="read:orders"))
        theirs = _guarded(original.sudo(scope="read:orders"))
        their_agent = original.Agent(name="SupportBot", scopes=scopes)
        with Agent("SupportBot", scopes).start_session(), their_agent.start_session():
            assert ours(ORDER, AMOUNT) == AMOUNT and theirs(ORDER, AMOUNT) == AMOUNT
            best = measure(
                {
                    "plain": guarded_calls(plain),
                    "ours": guarded_calls(ours),
                    "theirs": guarded_calls(theirs),
                },
                plan,
            )
        ours_net = _net(best["ours"], best["plain"])
        theirs_net = _net(best["theirs"], best["plain"])
        ratio = theirs_net / ours_net if ours_net > 0 else None
        report.rows.append(
            Row(
                key,
                f"vs agentsudo {version}, {label}, Agent sess.",
                ours_net,
                theirs_net,
                ratio,
                "theirs/ours >= 15x" if key == "2a" else "theirs/ours (info)",
                (ratio is not None and ratio >= 15) if key == "2a" else None,
            )
        )
    report.baselines.append(
        f"2a-2b  agentsudo {version} @sudo allowed call, net of an undecorated call; "
        "ratio = theirs / ours (how many times faster ours is)"
    )


# --- 3 and 4. the verifier ------------------------------------------------------


def verifier_call(verifier: Verifier) -> Callable[[str], Any]:
    """Our verify, behind one Python call like PyJWT's below."""
    verify = verifier.verify

    def ours(token: str) -> Any:
        return verify(token)

    return ours


def pyjwt_decoder(keys: Keys) -> Callable[[str], dict[str, Any]]:
    """PyJWT's decode of our tokens with every claim required, as a careful user calls it."""
    public, algorithms, options = keys.public, [keys.alg], {"require": REQUIRED}
    decode = jwt.decode

    def pyjwt(token: str) -> dict[str, Any]:
        return decode(
            token,
            public,
            algorithms=algorithms,
            audience=AUDIENCE,
            issuer=ISSUER,
            options=options,  # type: ignore[arg-type]
        )

    return pyjwt


def bench_verify(report: Report, plan: Plan, keyset: list[Keys]) -> None:
    for key, keys in zip(("3a", "3b"), keyset, strict=True):
        tokens = [keys.mint("read:orders write:refunds") for _ in range(plan.pool)]
        ours = verifier_call(keys.verifier(cache_size=0))
        pyjwt = pyjwt_decoder(keys)
        sample = tokens[0]
        assert ours(sample).jti == pyjwt(sample)["jti"]
        best = measure(
            {"ours": token_calls(ours, tokens), "pyjwt": token_calls(pyjwt, tokens)}, plan
        )
        ratio = best["ours"] / best["pyjwt"]
        report.rows.append(
            Row(
                key,
                f"cold verify, {keys.alg}, {plan.pool} distinct tokens",
                best["ours"],
                best["pyjwt"],
                ratio,
                "ours/PyJWT <= 0.8",
                ratio <= 0.8,
            )
        )
    report.baselines.append(
        "3a-3b  PyJWT jwt.decode(token, key object, algorithms=[alg], audience, issuer, "
        "options={'require': [exp iat nbf iss aud sub jti]}); ours: Verifier(cache_size=0)"
    )

    eddsa = keyset[0]
    token = eddsa.mint("read:orders write:refunds")
    verifier = eddsa.verifier()
    claims = verifier.verify(token)  # now cached
    cache = {token: claims}
    expires, clock = claims.expires_at + verifier.leeway, time.time

    def dict_cache(token: str) -> Any:
        found = cache.get(token)
        if found is not None and clock() < expires:
            return found
        raise LookupError(token)

    best = measure(
        {
            "ours": token_calls(verifier_call(verifier), [token]),
            "dict": token_calls(dict_cache, [token]),
        },
        plan,
    )
    report.rows.append(
        Row(
            "4",
            "repeat verify, cached token (EdDSA)",
            best["ours"],
            best["dict"],
            best["ours"] / best["dict"],
            f"<= 2 {US}",
            best["ours"] <= 2_000,
        )
    )
    report.baselines.append(
        "4      hand-written cache: dict.get(token) and one time.time() comparison"
    )


# --- 6. the public entry points, in the default configuration ---------------------


def _default_environment(eddsa: Keys) -> Iterator[None]:
    """AGENTSUDO_KEYS_DIR at the bench keys, a state file there, a fresh process policy."""
    from agentsudo_tokens.guard.agent import _policy
    from agentsudo_tokens.state import STATE_FILE
    from agentsudo_tokens.state.sqlite import SqliteStore
    from agentsudo_tokens.tokens.revocation import revoke

    os.environ["AGENTSUDO_KEYS_DIR"] = str(eddsa.directory)
    with SqliteStore(eddsa.directory / STATE_FILE) as state:  # as after a first `revoke`
        revoke(state, "0" * 32)
    _policy.reset()
    try:
        yield
    finally:
        del os.environ["AGENTSUDO_KEYS_DIR"]
        _policy.reset()


def _bearer_request(token: str) -> Any:
    from starlette.requests import Request

    scope = {
        "type": "http",
        "method": "GET",
        "path": "/orders",
        "headers": [(b"authorization", f"Bearer {token}".encode())],
        "query_string": b"",
    }
    return Request(scope)


def _awaited(dependency: Callable[[Any], Any], request: Any) -> Series:
    """``await dependency(request)`` n times in one event loop."""
    import asyncio

    async def loop(n: int) -> int:
        start = perf_counter_ns()
        for _ in repeat(None, n):
            await dependency(request)
        return perf_counter_ns() - start

    return lambda n: asyncio.run(loop(n))


def bench_public(report: Report, plan: Plan, eddsa: Keys) -> None:
    """What users call, with no explicit verifier: the settings, the state store and all."""
    token = eddsa.mint("read:orders write:refunds")
    offline = eddsa.verifier()
    offline.verify(token)
    with contextmanager(_default_environment)(eddsa):
        Agent.from_token(token)  # the first call verifies; the rest are repeats
        best = measure(
            {
                "ours": token_calls(Agent.from_token, [token]),
                "verify": token_calls(offline.verify, [token]),
            },
            plan,
        )
        report.rows.append(
            Row(
                "6a",
                "Agent.from_token(token), repeat token, default verifier + state file",
                best["ours"],
                best["verify"],
                best["ours"] / best["verify"],
                f"<= 2 {US}",
                best["ours"] <= 2_000,
            )
        )
        try:
            from fastapi.security import HTTPBearer

            from agentsudo_tokens.integrations.fastapi import require_scope
        except ImportError as exc:
            report.notes.append(f"6b: skipped: {exc.name} is not installed ([fastapi] extra)")
        else:
            request = _bearer_request(token)
            dependency, bearer = require_scope("read:orders"), HTTPBearer()
            best = measure(
                {"ours": _awaited(dependency, request), "bearer": _awaited(bearer, request)},
                plan,
            )
            net = best["ours"] - best["bearer"]
            report.rows.append(
                Row(
                    "6b",
                    "require_scope dependency, repeat token, default verifier",
                    best["ours"],
                    best["bearer"],
                    best["ours"] / best["bearer"],
                    f"net of HTTPBearer <= 2 {US}",
                    net <= 2_000,
                )
            )
    report.baselines.append(
        "6a     Verifier.verify(token) of a cached token, offline verifier (no store, no settings)"
    )
    report.baselines.append(
        "6b     FastAPI's HTTPBearer() dependency on the same request (it only parses the header)"
    )


# --- 5. the command line ---------------------------------------------------------


def bench_process(report: Report, plan: Plan, eddsa: Keys, workdir: Path) -> None:
    script = Path(sys.executable).parent / "agentsudo"
    if not script.exists():
        report.rows.append(
            Row("5", "`agentsudo issue` wall time", None, None, None, "-", None, process=True)
        )
        report.notes.append(f"5: skipped: no console script at {script}")
        return
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTSUDO_")}
    env["AGENTSUDO_KEYS_DIR"] = str(eddsa.directory)
    commands = {
        "ours": [str(script), "issue", "--agent", "SupportBot", "--scopes", "read:orders"],
        "jwt": [sys.executable, "-c", "import jwt"],
        "help": [str(script), "--help"],
        "click": [sys.executable, "-c", "import click"],
    }

    def wall(command: list[str]) -> int:
        start = perf_counter_ns()
        done = subprocess.run(
            command, env=env, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        elapsed = perf_counter_ns() - start
        if done.returncode != 0:
            message = done.stderr.decode(errors="replace").strip()
            raise RuntimeError(f"{command[:2]} exited {done.returncode}: {message}")
        return elapsed

    for command in commands.values():
        wall(command)  # warm the page cache and the bytecode cache
    times: dict[str, list[int]] = {name: [] for name in commands}
    order = list(commands.items())
    for index in range(plan.process_runs):
        for name, command in order if index % 2 == 0 else reversed(order):
            times[name].append(wall(command))
    for key, name, ours_key, base_key, limit in (
        ("5a", "`agentsudo issue` process wall time", "ours", "jwt", 1.2),
        ("5b", "`agentsudo --help` process wall time", "help", "click", 1.5),
    ):
        ours, base = statistics.median(times[ours_key]), statistics.median(times[base_key])
        ratio = ours / base
        report.rows.append(
            Row(key, name, ours, base, ratio, f"ours/baseline <= {limit}", ratio <= limit, True)
        )
    spread = ", ".join(
        f"{name} {min(values) / 1e6:.1f}-{max(values) / 1e6:.1f} ms"
        for name, values in times.items()
    )
    report.baselines.append(
        f"5a, 5b `python -c 'import jwt'`, `python -c 'import click'`; median of "
        f"{plan.process_runs} interleaved runs each (range: {spread})"
    )


# --- output ----------------------------------------------------------------------


def print_report(report: Report, plan: Plan, elapsed: float) -> None:
    header = ("#", "measurement", "ours", "baseline", "ratio", "target", "result")
    lines = [header]
    for row in report.rows:
        if row.error is not None:
            lines.append((row.key, row.name, "-", "-", "-", row.target, "ERROR"))
            continue
        result = "-" if row.ok is None else ("PASS" if row.ok else "MISS")
        if row.ours is None:
            result = "skipped"
        ratio = "-" if row.ratio is None else f"{row.ratio:.2f}x"
        lines.append(
            (
                row.key,
                row.name,
                _fmt_time(row.ours, row.process),
                _fmt_time(row.baseline, row.process),
                ratio,
                row.target,
                result,
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    right = {2, 3, 4}
    print()
    for number, line in enumerate(lines):
        cells = [
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(line)
        ]
        print("  ".join(cells).rstrip())
        if number == 0:
            print("  ".join("-" * width for width in widths))
    print()
    print("baselines (measured in this run, interleaved with ours):")
    for line in sorted(report.baselines):
        print(f"  {line}")
    print("notes:")
    print(
        f"  times are the minimum over {plan.repeats} interleaved repeats, gc off; "
        "ratio = ours / baseline unless the target says otherwise; targets are informational"
    )
    for line in report.notes:
        print(f"  {line}")
    print(f"  total {elapsed:.1f} s")


def environment(plan: Plan) -> list[str]:
    def version(name: str) -> str:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return [
        f"agentsudo-tokens benchmark ({plan.name} run)",
        f"Python {platform.python_version()} ({platform.python_implementation()}) "
        f"on {platform.platform()}, {cpus} CPUs",
        f"PyJWT {version('PyJWT')}, cryptography {version('cryptography')}, "
        f"agentsudo-tokens {version('agentsudo-tokens')}, agentsudo {version('agentsudo')}",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run (< 30 s) for CI")
    args = parser.parse_args()
    plan = QUICK if args.quick else FULL
    started = time.perf_counter()
    for line in environment(plan):
        print(line)
    # Settings are read from the environment; keep the caller's AGENTSUDO_* out of the way.
    removed = sorted(k for k in os.environ if k.startswith("AGENTSUDO_"))
    for name in removed:
        del os.environ[name]

    report = Report()
    if removed:
        report.notes.append(f"ignored the caller's {', '.join(removed)}")
    with tempfile.TemporaryDirectory(prefix="agentsudo-bench-") as temp:
        root = Path(temp)
        eddsa, es256 = make_keys(root, "EdDSA"), make_keys(root, "ES256")
        sections: list[tuple[str, Callable[[], None]]] = [
            ("1", lambda: bench_guard(report, plan, eddsa)),
            ("3-4", lambda: bench_verify(report, plan, [eddsa, es256])),
            ("6", lambda: bench_public(report, plan, eddsa)),
            # Last in this process: importing agentsudo 0.3.2 runs logging.basicConfig.
            ("2", lambda: bench_original(report, plan)),
            ("5", lambda: bench_process(report, plan, eddsa, root)),
        ]
        for label, section in sections:
            print(f"measuring {label} ...", file=sys.stderr, flush=True)
            try:
                section()
            except Exception as exc:  # report and go on; a broken section fails the run
                report.failed = True
                report.rows.append(
                    Row(label, f"section {label}", None, None, None, "-", None, error=str(exc))
                )
                report.notes.append(f"section {label} failed: {type(exc).__name__}: {exc}")
                traceback.print_exc()
    report.rows.sort(key=lambda row: row.key)
    print_report(report, plan, time.perf_counter() - started)
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
