"""Every module imports on its own, and no import circle spans more than one file (raylrec's layering)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "raylrec"


def module_files() -> dict[str, Path]:
    found = {}
    for file in sorted(PACKAGE.rglob("*.py")):
        parts = file.relative_to(PACKAGE.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = file
    return found


def is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imported_modules(name: str, file: Path, modules: dict[str, Path]) -> set[str]:
    """The raylrec modules `name` imports anywhere: at top level and inside functions (deferred imports), but not
    under `if TYPE_CHECKING:` (annotations only, never run). `from package import module` counts as the module."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and is_type_checking(node):
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if file.name == "__init__.py" else name.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            found.update(
                f"{source}.{alias.name}" if f"{source}.{alias.name}" in modules else source for alias in node.names
            )
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(file.read_text(), str(file)))
    return {module for module in found if module in modules and module != name}


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    cycles.append(sorted(component))
    return cycles


def test_no_import_cycle_spans_more_than_one_module():
    modules = module_files()
    graph = {name: imported_modules(name, file, modules) for name, file in modules.items()}
    assert import_cycles(graph) == []


def test_the_cycle_finder_finds_cycles():
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert import_cycles({"a": {"b"}, "b": set()}) == []


def test_moved_pieces_sit_in_their_layers():
    """The pieces the layering moved are imported from their new homes, and the old ones are gone."""
    import raylrec.pipeline

    for name in ("StageSpec", "resolve_stage", "ensure_prepared"):
        assert (
            not hasattr(raylrec.pipeline, name) or getattr(raylrec.pipeline, name).__module__ != "raylrec.pipeline"
        ), name
    from raylrec.data.prepare import ensure_prepared
    from raylrec.train.spec import StageSpec, resolve_stage

    assert ensure_prepared.__module__ == "raylrec.data.prepare"
    assert StageSpec.__module__ == resolve_stage.__module__ == "raylrec.train.spec"


# Imported once before the forks, so each child pays only for raylrec's own modules (their import order and
# circles are what this checks; the third-party libraries' own imports are not).
THIRD_PARTY = (
    "numpy",
    "pandas",
    "pyarrow",
    "pydantic",
    "yaml",
    "torch",
    "ray",
    "ray.train",
    "ray.data",
    "ray.tune",
    "transformers",
    "safetensors",
    "sentence_transformers",
    "deepspeed",
    "matplotlib.pyplot",
    "scipy.stats",
)
EACH_ALONE = """
import importlib, os, sys, traceback
for library in sys.argv[2].split(","):
    importlib.import_module(library)
failed = []
for module in sys.argv[1].split(","):
    pid = os.fork()
    if pid == 0:  # a child whose sys.modules holds no raylrec module yet
        try:
            importlib.import_module(module)
        except BaseException:
            traceback.print_exc()
            os._exit(1)
        os._exit(0)
    if os.waitpid(pid, 0)[1] != 0:
        failed.append(module)
print("FAILED:" + ",".join(failed))
"""


def test_every_module_imports_alone():
    """Each module is the first raylrec module its process imports (a forked child of an interpreter that loaded
    only the third-party libraries), so an import that works only after another module's fails here."""
    modules = sorted(module_files())
    done = subprocess.run(
        [sys.executable, "-c", EACH_ALONE, ",".join(modules), ",".join(THIRD_PARTY)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=PACKAGE.parent,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "FAILED:", done.stderr[-3000:]
