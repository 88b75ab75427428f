"""The package's imports run one way: pure policy at the bottom, the glue above it, the CLI on top.

Checked on the source text (every import statement, relative ones resolved), so a violation is
caught even in a module no other test imports.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "chime_egress"

# wing -> the top-level names its modules may never import
FORBIDDEN = {
    "policy": (
        "mitmproxy",
        "chime_egress.proxy",
        "chime_egress.cli",
        "chime_egress.csp",
        "chime_egress.deploy",
    ),
    "deploy": ("mitmproxy", "chime_egress.proxy", "chime_egress.cli", "chime_egress.csp"),
    "csp": ("chime_egress.proxy", "chime_egress.cli", "chime_egress.policy", "chime_egress.deploy"),
    "proxy": ("chime_egress.cli", "chime_egress.deploy", "chime_egress.csp"),
}
# The one module of a pure wing that is mitmproxy glue (its entry script is addon/chime_csp.py).
GLUE = {"csp/addon.py"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def wing_modules() -> list[tuple[str, Path]]:
    found = []
    for wing in FORBIDDEN:
        for path in sorted((PACKAGE / wing).rglob("*.py")):
            if str(path.relative_to(PACKAGE)) not in GLUE:
                found.append((wing, path))
    return found


@pytest.mark.parametrize(
    ("wing", "path"),
    wing_modules(),
    ids=lambda v: str(v.relative_to(PACKAGE)) if isinstance(v, Path) else v,
)
def test_imports_run_one_way(wing: str, path: Path) -> None:
    bad = sorted(
        name
        for name in imported_names(path)
        for forbidden in FORBIDDEN[wing]
        if name == forbidden or name.startswith(forbidden + ".")
    )
    assert not bad, f"{path.relative_to(PACKAGE)} ({wing}) imports {bad}"


def test_the_check_sees_relative_imports() -> None:
    names = imported_names(PACKAGE / "proxy" / "addon.py")
    assert "chime_egress.policy.compiled" in names
    assert "mitmproxy" in names or any(name.startswith("mitmproxy.") for name in names)


def test_every_wing_exists() -> None:
    for wing in FORBIDDEN:
        assert (PACKAGE / wing / "__init__.py").is_file(), wing
