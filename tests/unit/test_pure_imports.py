"""The pure modules stay pure: none imports I/O (sockets, event loops, the database,
Redis and Kafka drivers, HTTP frameworks, the clock, the environment) or the
configuration. They take the few values they need as arguments or policy values
(Settings.expiry_policy, .authorization_policy, .document_policy); a project module
they import must be pure itself. Read with ast: nothing is imported to check."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LIB = ROOT / "lib"
STORE = ROOT / "services" / "presence-store"

# Pure packages (every module in them) and pure modules of packages that also do I/O.
PURE_PACKAGES = [
    LIB / "presence" / name
    for name in ("sip", "pidf", "packages", "rules", "xcap", "subscriptions")
]
PURE_MODULES = [
    LIB / "presence" / "__init__.py",
    LIB / "presence" / "bus" / "__init__.py",
    LIB / "presence" / "bus" / "events.py",
    LIB / "presence" / "bus" / "isolation.py",
    LIB / "presence" / "column_limits.py",
    LIB / "presence" / "safexml.py",
    STORE / "presence_store" / "outcome.py",
    STORE / "presence_store" / "publication.py",
    STORE / "presence_store" / "subscription.py",
]
# Libraries that do I/O or read the process's surroundings.
IMPURE_LIBRARIES = frozenset(
    {
        "aiokafka", "asyncio", "asyncpg", "fastapi", "httpx", "os", "redis", "socket", "ssl",
        "starlette", "subprocess", "sys", "threading", "time", "uvicorn", "uvloop",
    }
)  # fmt: skip
# The project's own top-level packages: what they import must be pure as well.
PROJECT = frozenset({"presence", "presence_store", "notifier", "sip_edge", "presencectl"})


def module_name(path: Path) -> str:
    base = STORE if path.is_relative_to(STORE) else LIB
    parts = list(path.relative_to(base).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def pure_files() -> list[Path]:
    files = [path for package in PURE_PACKAGES for path in sorted(package.glob("*.py"))]
    return files + PURE_MODULES


PURE = {module_name(path): path for path in pure_files()}


def project_module_exists(name: str) -> bool:
    relative = Path(*name.split("."))
    return any(
        (base / relative).with_suffix(".py").is_file()
        or (base / relative / "__init__.py").is_file()
        for base in (LIB, STORE, ROOT / "services" / "notifier", ROOT / "services" / "sip-edge")
    )


def imported(path: Path) -> Iterator[tuple[int, str]]:
    """(line, module) of every import in the file, anywhere in it (a function's own
    import or one under TYPE_CHECKING counts too); `from a import b` names a.b when
    that is a module."""
    package = module_name(path).rsplit(".", 1)[0] if path.name != "__init__.py" else ""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                anchor = (package or module_name(path)).split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                module = ".".join([*anchor, module] if module else anchor)
            for alias in node.names:
                candidate = f"{module}.{alias.name}"
                is_module = candidate.split(".")[0] in PROJECT and project_module_exists(candidate)
                yield node.lineno, candidate if is_module else module


def why_impure(module: str) -> str | None:
    top = module.split(".")[0]
    if top in IMPURE_LIBRARIES:
        return "does I/O or reads the process's surroundings"
    if top in PROJECT and module not in PURE:
        if module.startswith(("presence.settings", "presence.runtime", "presence.tables")):
            return "is I/O or configuration: take the values needed as arguments"
        return "is not one of the pure modules"
    return None


def test_the_listed_pure_modules_exist() -> None:
    missing = [str(path.relative_to(ROOT)) for path in PURE_MODULES + PURE_PACKAGES]
    missing = [name for name in missing if not (ROOT / name).exists()]
    assert not missing, f"listed as pure but not found (moved? update this test): {missing}"


@pytest.mark.parametrize("module", sorted(PURE), ids=str)
def test_a_pure_module_imports_nothing_impure(module: str) -> None:
    path = PURE[module]
    offences = [
        f"{path.relative_to(ROOT)}:{line}: {module} imports {name}, which {why}"
        for line, name in sorted(imported(path))
        if (why := why_impure(name)) is not None
    ]
    assert not offences, "pure module imports I/O:\n" + "\n".join(offences)


def test_the_check_sees_an_offence() -> None:
    assert why_impure("presence.settings") is not None
    assert why_impure("presence.runtime.metrics") is not None
    assert why_impure("asyncpg.exceptions") is not None
    assert why_impure("presence.bus.topics") is not None  # names topics, creates them too
    assert why_impure("presence.rules.authorization") is None
    assert why_impure("lxml.etree") is None
