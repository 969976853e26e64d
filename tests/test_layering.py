"""What crosses a service boundary is declared once: no service imports another.

A service may import its own package, the shared runtime, the contracts, the
generated messages, and the journal's public API (``services.journal`` itself,
never its private modules). The command line and the benches assemble
services, so they may import any.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SERVICES = Path(__file__).resolve().parents[1] / "services"
PACKAGES = ("orders", "scoring", "lending", "repayment", "replica", "journal")
SHARED = ("services.runtime", "services.contracts", "services.gen")


def _imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
        elif isinstance(node, ast.Import):
            names.extend(a.name for a in node.names)
    return [n for n in names if n.startswith("services")]


@pytest.mark.parametrize("package", PACKAGES)
def test_a_service_imports_no_other_service(package: str) -> None:
    wrong = []
    for path in sorted((SERVICES / package).rglob("*.py")):
        for name in _imports(path):
            own = name == f"services.{package}" or name.startswith(f"services.{package}.")
            if own or name.startswith(SHARED) or name == "services.journal":
                continue
            wrong.append(f"{path.relative_to(SERVICES)}: {name}")
    assert not wrong, wrong


#: The supervisor of `scf up` starts the banks' replicas, as the command line does.
ASSEMBLERS = {"runtime/platform.py": ("services.replica.config",)}


@pytest.mark.parametrize("package", ("runtime", "contracts"))
def test_the_shared_floors_import_no_service(package: str) -> None:
    wrong = [
        f"{path.relative_to(SERVICES)}: {name}"
        for path in sorted((SERVICES / package).rglob("*.py"))
        for name in _imports(path)
        if not name.startswith(SHARED)
        and name != "services.journal"
        and name not in ASSEMBLERS.get(str(path.relative_to(SERVICES)), ())
    ]
    assert not wrong, wrong
