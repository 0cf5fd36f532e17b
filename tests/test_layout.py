"""The package layout's promises: imports point one way, no cycles, small modules."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[1] / "src" / "loopformer"
# What each part may import at module level (besides itself).
ALLOWED = {
    "config": {"fields"}, "fields": set(), "files": set(), "flops": set(), "memory": set(),
    "data": {"files"},
    "model": {"config"},
    "generation": {"model", "config", "compile"}, "compile": {"model", "config"},
    "tasks": {"model", "config"},
    "evaluation": {"model", "tasks", "config"},
    "analysis": {"model", "tasks", "files"},
    "training": {"model", "tasks", "evaluation", "compile", "config", "files", "data"},
    "train_cli": {"config", "training"}, "hf": {"config", "model"},
    "text_cli": {"files", "training", "tasks", "evaluation", "data", "hf"},
    "cli": set(ALL := {"config", "files", "model", "generation", "compile", "tasks",
                       "evaluation", "training", "flops", "memory", "train_cli", "data",
                       "hf", "text_cli", "analysis"}),
    "__init__": ALL, "__main__": {"cli"},
}
# Thin methods that call the layer above them at call time (and say so in the code).
DEFERRED = {("model", "compile"), ("model", "generation")}


def modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        yield ".".join(path.relative_to(PACKAGE).with_suffix("").parts), path


def imports(path: Path, name: str, top_level: bool) -> set[str]:
    """Modules of the package that `path` imports (as dotted names below loopformer)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level else ast.walk(tree)
    package = name.split(".")[:-1]
    found = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[:len(package) - node.level + 1]
            target = ".".join(base + ([node.module] if node.module else []))
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
    known = {m for m, _ in modules()}
    found = {t + ".__init__" if t + ".__init__" in known else t for t in found}
    return {t for t in found if t in known and t != name}


def part(module: str) -> str:
    return module.split(".")[0]


@pytest.mark.parametrize("module, path", list(modules()), ids=lambda v: str(v))
def test_imports_point_down(module, path):
    for target in imports(path, module, top_level=True):
        assert part(target) == part(module) or part(target) in ALLOWED[part(module)], \
            f"{module} imports {target}"
    for target in imports(path, module, top_level=False):
        if part(target) != part(module) and part(target) not in ALLOWED[part(module)]:
            assert (part(module), part(target)) in DEFERRED, f"{module} imports {target}"


def test_no_import_cycles_between_modules():
    graph = {m: imports(p, m, top_level=True) for m, p in modules()}
    state = {}

    def visit(m, trail):
        if state.get(m) == "done":
            return
        assert state.get(m) != "open", "import cycle: " + " -> ".join(trail + [m])
        state[m] = "open"
        for target in graph.get(m, ()):
            visit(target, trail + [m])
        state[m] = "done"

    for m in graph:
        visit(m, [])


@pytest.mark.parametrize("module, path", list(modules()), ids=lambda v: str(v))
def test_no_module_over_300_lines(module, path):
    assert len(path.read_text().splitlines()) <= 300
