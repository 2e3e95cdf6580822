"""The package's structure in figures, from the source alone (``ast``; nothing is imported or run).

    python scripts/structure.py          # the figures and every finding
    python scripts/structure.py --check  # exit 1 when a rule below is broken (the suite runs this too)

Rules (docs/architecture.md, "Layers and folders"):
- the import graph of ``src/tinydiffusion`` (every import, those inside functions included; ``if TYPE_CHECKING:``
  blocks aside) has no cycle, and no module imports from a layer above its own (``LAYERS``, bottom first);
- imports of the package inside functions only in ``cli/`` (``--help`` must not import torch);
- at most ``MAX_TOP`` modules at the top of the package and ``MAX_FOLDER`` in any folder;
- no file over ``MAX_LINES`` lines, no function over ``MAX_FUNCTION`` lines, a README of at most ``MAX_README``.
"""

from __future__ import annotations

import ast
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "src" / "tinydiffusion"
# Bottom first: a module may import from its own layer or one below. Names are top-level modules or folders.
LAYERS = (
    ("__init__", "errors", "vocab"),
    ("checks",),
    ("store",),
    ("core",),
    ("models",),
    ("runtime",),
    ("data",),
    ("conditioning",),
    ("sampling",),
    ("quality",),
    ("export",),
    ("training",),
    ("studio",),
    ("cli", "__main__"),
)
LAZY_IMPORTS_ALLOWED = ("cli",)  # folders whose functions may import the package (to keep --help torch-free)
MAX_TOP, MAX_FOLDER, MAX_LINES, MAX_FUNCTION, MAX_README = 8, 12, 300, 60, 250


def modules() -> dict[str, Path]:
    """``{"sampling.pipeline": path, …}`` for every module of the package (``__init__`` as its folder)."""
    out = {}
    for path in sorted(PKG.rglob("*.py")):
        parts = path.relative_to(PKG).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name or "__init__"] = path
    return out


def _type_checking(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (getattr(test, "id", None) == "TYPE_CHECKING" or
                                         getattr(test, "attr", None) == "TYPE_CHECKING")


def imports(name: str, path: Path, known: set[str]) -> list[tuple[str, int, bool]]:
    """``(imported module, line, inside a function)`` for every import of the package in one module."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name.split(".") if path.name == "__init__.py" and name != "__init__" else name.split(".")[:-1]
    found: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        if _type_checking(node):
            return
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1] if node.level > 1 else package
                mod = ".".join(base + ([node.module] if node.module else []))
            elif (node.module or "").split(".")[0] == "tinydiffusion":
                mod = node.module.removeprefix("tinydiffusion").lstrip(".")
            else:
                mod = None
            if mod is not None:
                for alias in node.names:
                    full = f"{mod}.{alias.name}" if mod else alias.name
                    target = full if full in known else mod or "__init__"
                    found.append((target, node.lineno, in_function))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "tinydiffusion":
                    mod = alias.name.removeprefix("tinydiffusion").lstrip(".") or "__init__"
                    found.append((mod, node.lineno, in_function))
        inner = in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        for child in ast.iter_child_nodes(node):
            visit(child, inner)

    visit(tree, False)
    return sorted({(t, line, f) for t, line, f in found if t != name})


def layer(module: str) -> int:
    top = module.split(".")[0]
    for i, names in enumerate(LAYERS):
        if top in names:
            return i
    return -1


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), each a cycle or several."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]
    sys.setrecursionlimit(10_000)

    def connect(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return out


def long_functions(path: Path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [(n.name, n.end_lineno - n.lineno + 1) for n in ast.walk(tree)
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno + 1 > MAX_FUNCTION]


def findings() -> tuple[list[str], dict[str, object]]:
    """``(every broken rule, one line each; the figures)``."""
    mods = modules()
    known = set(mods)
    graph: dict[str, set[str]] = {}
    problems: list[str] = []
    lazy = 0
    for name, path in mods.items():
        edges = imports(name, path, known)
        graph[name] = {t for t, _, _ in edges if t in known}
        for target, line, in_function in edges:
            if layer(target) > layer(name):
                problems.append(f"upward import: {path.relative_to(ROOT)}:{line} ({name}, layer {layer(name)}) imports "
                                f"{target} (layer {layer(target)})")
            if in_function and name.split(".")[0] not in LAZY_IMPORTS_ALLOWED:
                lazy += 1
                problems.append(f"import inside a function: {path.relative_to(ROOT)}:{line} imports {target}")
        if layer(name) < 0:
            problems.append(f"{name} is in no layer of scripts/structure.py (LAYERS)")
    problems += [f"import cycle: {' <-> '.join(group)}" for group in cycles(graph)]
    top = [p for p in PKG.glob("*.py")]
    if len(top) > MAX_TOP:
        problems.append(f"{len(top)} modules at the top of the package (at most {MAX_TOP})")
    folders = Counter(p.parent for p in PKG.rglob("*.py") if p.parent != PKG and p.name != "__init__.py")
    for folder, count in folders.items():
        if count > MAX_FOLDER:
            problems.append(f"{folder.relative_to(ROOT)} holds {count} modules (at most {MAX_FOLDER})")
    lines = {p: p.read_text(encoding="utf-8").count("\n") for p in mods.values()}
    problems += [f"{p.relative_to(ROOT)} is {n} lines (at most {MAX_LINES})" for p, n in lines.items() if n > MAX_LINES]
    for path in mods.values():
        problems += [f"{path.relative_to(ROOT)}:{f} is {n} lines (at most {MAX_FUNCTION})" for f, n in long_functions(path)]
    readme = (ROOT / "README.md").read_text(encoding="utf-8").count("\n")
    if readme > MAX_README:
        problems.append(f"README.md is {readme} lines (at most {MAX_README})")
    figures = {"modules": len(mods), "package lines": sum(lines.values()), "top-level modules": len(top),
               "largest folder": max(folders.values(), default=0), "largest file": max(lines.values()),
               "imports": sum(len(v) for v in graph.values()), "imports inside functions outside cli/": lazy,
               "cycles": len(cycles(graph)), "README lines": readme}
    return problems, figures


def main() -> int:
    problems, figures = findings()
    for key, value in figures.items():
        print(f"{key:<40}{value}")
    for line in problems:
        print("  " + line)
    print(f"{len(problems)} finding(s)")
    return 1 if problems and "--check" in sys.argv else 0


if __name__ == "__main__":
    raise SystemExit(main())
