"""The repository keeps its promises: README commands, CI, no private keys, a clean public API."""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys
from pathlib import Path

import agentsudo_tokens

ROOT = Path(__file__).resolve().parent.parent


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```sh\n(.+?)\n```", text)


def test_readme_opens_with_the_demo_and_the_test_command() -> None:
    demo, tests = _readme_commands()[:2]
    assert "examples/demo.py" in demo and "pip install" in demo
    assert "pytest" in tests and "pip install" in tests


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    tests = _readme_commands()[1]
    assert tests in (ROOT / ".ci" / "run").read_text()


def test_all_matches_the_public_names() -> None:
    exported = set(agentsudo_tokens._EXPORTS)
    assert set(agentsudo_tokens.__all__) == exported | {"__version__"}
    assert list(agentsudo_tokens.__all__) == sorted(agentsudo_tokens.__all__)
    for name in agentsudo_tokens.__all__:  # every name resolves, from the module it names
        value = getattr(agentsudo_tokens, name)
        if name != "__version__":
            module = importlib.import_module(f"agentsudo_tokens.{agentsudo_tokens._EXPORTS[name]}")
            assert getattr(module, name) is value
    assert dir(agentsudo_tokens) == sorted(agentsudo_tokens.__all__)


def test_the_type_checking_imports_match_the_exports() -> None:
    source = (ROOT / "agentsudo_tokens" / "__init__.py").read_text()
    block = source.split("if TYPE_CHECKING:", 1)[1].split("\n\n", 1)[0]
    imported = set(re.findall(r"\b([A-Za-z_]\w*)\b(?=,|\n|$)", block)) - {"import"}
    assert set(agentsudo_tokens._EXPORTS) <= imported


def test_importing_the_package_loads_no_submodule() -> None:
    code = (
        "import agentsudo_tokens, sys; "
        "print(sorted(m for m in sys.modules if m.startswith('agentsudo_tokens.')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_keys_directory_tracks_only_readme_and_gitignore() -> None:
    tracked = subprocess.run(
        ["git", "ls-files", "keys"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    assert sorted(tracked) == ["keys/.gitignore", "keys/README.md"]
    assert (ROOT / "keys" / ".gitignore").read_text() == "*\n!.gitignore\n!README.md\n"


def test_no_private_key_is_committed() -> None:
    found = subprocess.run(
        ["git", "grep", "-lE", "PRIVATE KEY-----$"], cwd=ROOT, capture_output=True, text=True
    )
    assert found.stdout == ""


def test_no_top_level_cli_package_is_installed() -> None:
    done = subprocess.run(
        [sys.executable, "-c", "import importlib.util as u; print(u.find_spec('cli'))"],
        cwd="/",
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == "None"


def test_the_library_never_prints_exits_or_configures_logging() -> None:
    banned = {"print", "exit", "basicConfig", "dictConfig", "fileConfig"}
    for path in (ROOT / "agentsudo_tokens").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                func = node.func
                name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
                assert name not in banned, f"{path}:{node.lineno} calls {name}"


def test_the_demo_runs_end_to_end() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "demo.py")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "all outcomes as expected" in done.stdout
    assert done.stdout.count("DENIED") == 3


def test_install_commands_work_from_a_checkout() -> None:
    """Not published: every README installs from the checkout, with extras that exist."""
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    for readme in [ROOT / "README.md", *sorted((ROOT / "examples").rglob("README.md"))]:
        text = readme.read_text()
        assert "agentsudo-tokens[" not in text, readme  # the package is not on PyPI
        for named in re.findall(r"pip install (?:-e )?'\.\[([a-z,-]+)\]'", text):
            assert set(named.split(",")) <= set(extras), (readme, named)
    services = {re.split(r"[<>=]", need)[0] for need in extras["services"]}
    assert services == {"fastapi", "uvicorn", "httpx"}  # what examples/services runs


def test_runtime_dependencies_are_the_ones_the_package_imports() -> None:
    """Every runtime dependency is imported by the library or the CLI, and nothing else is."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    import_names = {"pyjwt": "jwt"}
    declared = {
        import_names.get(name, name)
        for name in (re.split(r"[<>=!~ \[]", need)[0].lower() for need in project["dependencies"])
    }
    ours = {"agentsudo_tokens", "agentsudo_cli"}
    imported: set[str] = set()
    for package in (ROOT / "agentsudo_tokens", ROOT / "cli" / "agentsudo_cli"):
        for path in package.rglob("*.py"):
            if "integrations" in path.parts and path.stem != "pydantic":
                continue  # integrations with an extra of their own
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    imported.update(alias.name.split(".")[0] for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    imported.add(node.module.split(".")[0])
    third_party = {name for name in imported - ours if name not in sys.stdlib_module_names}
    assert declared <= imported, f"declared but never imported: {sorted(declared - imported)}"
    extras = {
        "redis",
        "anyio",
        "starlette",
        "uvicorn",
        "opentelemetry",  # AGENTSUDO_OTEL=1 ([otel])
    }  # a store URL, a caller, or `serve` ([broker])
    assert third_party - extras <= declared, sorted(third_party - extras - declared)


def _package_imports(package: Path) -> dict[str, set[str]]:
    """Each module of ``package`` and the package modules it imports, at any depth, typing too."""
    files = {
        p: ".".join(p.relative_to(package.parent).with_suffix("").parts)
        for p in package.rglob("*.py")
    }
    names = {name.removesuffix(".__init__") for name in files.values()}
    graph: dict[str, set[str]] = {}
    for path, dotted in files.items():
        me = dotted.removesuffix(".__init__")
        here = me if path.name == "__init__.py" else me.rpartition(".")[0]
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names if alias.name in names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = here.split(".")[: len(here.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                for alias in node.names:
                    full = f"{base}.{alias.name}"
                    found.add(full if full in names else base)
        # the package face re-exporting its children, and importing the face, name no layer
        graph[me] = {
            m
            for m in found & names
            if m != me
            and m != package.name
            and not me.startswith(m + ".")
            and not (path.name == "__init__.py" and m.startswith(me + "."))
        }
    return graph


def test_the_library_has_no_import_cycles() -> None:
    """Modules import only those below them: no circle, even through a lazy or typing import."""
    graph = _package_imports(ROOT / "agentsudo_tokens")
    in_a_cycle = []
    for start in graph:
        seen, todo = set(), list(graph[start])
        while todo:
            module = todo.pop()
            if module not in seen:
                seen.add(module)
                todo.extend(graph.get(module, ()))
        if start in seen:
            in_a_cycle.append(start)
    assert sorted(in_a_cycle) == []


# Each folder imports only from its own layer and those below it (STYLE.md's layout).
# The broker needs no guard; the guard's `on_deny="ask"` is a client of the broker.
_LAYERS = (
    ("errors", "config", "fileperms"),
    ("state",),
    ("tokens",),
    ("audit",),
    ("broker",),
    ("guard",),
    ("integrations",),
    # the public face, and module paths kept for code that imports them
    ("agentsudo_tokens", "propagation", "decision", "revocation_list", "audit_file"),
)


def _layer(module: str) -> int:
    part = module.split(".")[1] if "." in module else module
    for rank, names in enumerate(_LAYERS):
        if part in names:
            return rank
    raise AssertionError(f"{module} is in no layer: add its folder to _LAYERS")


def test_the_library_imports_only_downwards() -> None:
    """Data flows one way, token in to audit out: no layer imports a higher one."""
    graph = _package_imports(ROOT / "agentsudo_tokens")
    upward = sorted(
        f"{module} -> {target}"
        for module, targets in graph.items()
        for target in targets
        if _layer(target) > _layer(module)
    )
    assert upward == []


def test_the_core_never_imports_an_integration() -> None:
    graph = _package_imports(ROOT / "agentsudo_tokens")
    core = [m for m in graph if _layer(m) < _layer("agentsudo_tokens.integrations")]
    assert core and not [m for m in core if any(".integrations" in t for t in graph[m])]


def test_the_kept_module_paths_are_the_new_modules_names() -> None:
    """`from agentsudo_tokens.propagation import agent_env` (README) still works: same objects."""
    kept = {
        "propagation": "guard.propagation",
        "decision": "guard.decision",
        "revocation_list": "tokens.revocation_list",
        "audit_file": "audit.file",
    }
    # and the names they held without being in __all__, as of the move (c8f1bd0)
    also = {
        "decision": ["evaluate"],
        "revocation_list": [
            "DEFAULT_LIST_TTL", "DEFAULT_MAX_STALE", "DEFAULT_REFRESH", "DEFAULT_TIMEOUT",
            "MAX_ENTRIES", "MAX_LIST_BYTES", "MAX_LIST_TTL", "RETRY_INTERVAL",
        ],
        "audit_file": ["AuditFile", "ChainReport", "GENESIS", "MAX_LINE_BYTES"],
    }  # fmt: skip
    for old, new in kept.items():
        before = importlib.import_module(f"agentsudo_tokens.{old}")
        after = importlib.import_module(f"agentsudo_tokens.{new}")
        assert before.__all__ == after.__all__
        names = [*after.__all__, *also.get(old, [])]
        assert all(getattr(before, name) is getattr(after, name) for name in names)
    audit = importlib.import_module("agentsudo_tokens.audit")
    events = importlib.import_module("agentsudo_tokens.audit.events")
    for name in ["AuditEvent", "LOGGER_NAME", "emit_session", "logger", "record", "set_audit_log"]:
        assert getattr(audit, name) is getattr(events, name)
