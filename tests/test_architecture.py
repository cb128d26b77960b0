"""The layout's rules, read from the source: module size, no import cycle, the torch boundary."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "chainx"
MAX_LINES = 400
TORCH_PACKAGES = ("torch", "torchvision", "onnx2torch")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every module a file imports, anywhere in it (functions and TYPE_CHECKING blocks too)."""
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def chainx_imports(name: str) -> set[str]:
    """The chainx modules `name` imports (a package import counts as its __init__)."""
    return {target for target in imports(MODULES[name]) if target in MODULES} - {name}


def find_cycle() -> list[str] | None:
    graph = {name: chainx_imports(name) for name in MODULES}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(name: str) -> list[str] | None:
        state[name] = 1
        stack.append(name)
        for target in sorted(graph[name]):
            if state.get(target) == 1:
                return stack[stack.index(target) :] + [target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        stack.pop()
        state[name] = 2
        return None

    for name in sorted(graph):
        if name not in state:
            cycle = visit(name)
            if cycle:
                return cycle
    return None


def test_the_checker_sees_a_cycle(monkeypatch):
    monkeypatch.setitem(MODULES, "chainx.fake_a", PACKAGE / "errors.py")
    real = chainx_imports

    def with_fake(name: str) -> set[str]:
        if name == "chainx.fake_a":
            return {"chainx.errors"}
        if name == "chainx.errors":
            return {"chainx.fake_a"}
        return real(name)

    monkeypatch.setattr(f"{__name__}.chainx_imports", with_fake)
    assert find_cycle() == ["chainx.errors", "chainx.fake_a", "chainx.errors"]


def test_no_import_cycle():
    assert find_cycle() is None


@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_size(name):
    lines = len(MODULES[name].read_text().splitlines())
    assert lines <= MAX_LINES, f"{MODULES[name]} has {lines} lines"


def test_only_scoring_imports_torch():
    importers = {
        name
        for name, path in MODULES.items()
        if any(t.split(".")[0] in TORCH_PACKAGES for t in imports(path))
    }
    assert importers, "the scoring package imports torch"
    assert {name for name in importers if not name.startswith("chainx.scoring.")} == set()


def test_the_scoring_package_itself_loads_no_torch():
    found = imports(PACKAGE / "scoring" / "__init__.py")
    assert not any(t.split(".")[0] in TORCH_PACKAGES for t in found)
