"""The layers, enforced: schemas < infrastructure (enerlink/) < services < api and the command line,
services apart from each other, and no import cycle between modules (function-level imports included: a
cycle hidden inside a function is a cycle). Read from the source with ``ast``, every import statement
wherever it is.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# the repository's folders, each installed under the one package ``enerlink`` (pyproject's package-dir)
FOLDERS = ("schemas", "enerlink", "edge", "ingest", "aggregator", "archiver", "settlement", "api", "hass")
SERVICES = ("edge", "ingest", "aggregator", "archiver", "settlement", "hass")
# the command line sits in enerlink/ beside the infrastructure, above everything
TOP = (
    "enerlink.api",
    "enerlink.cli",
    "enerlink.__main__",
    "enerlink.up",
    "enerlink.inspect_cli",
)


def _installed(folder: str) -> str:
    return "enerlink" if folder == "enerlink" else f"enerlink.{folder}"


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for folder in FOLDERS:
        for path in (ROOT / folder).rglob("*.py"):
            rel = path.relative_to(ROOT / folder).with_suffix("").parts
            parts = (_installed(folder), *(rel[:-1] if rel[-1] == "__init__" else rel))
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _part(module: str) -> str:
    """The folder a module comes from: ``enerlink.edge.sim`` -> ``edge``, ``enerlink.db`` -> ``enerlink``."""
    second = module.split(".")[1] if module.count(".") else ""
    return second if second in FOLDERS and second != "enerlink" else "enerlink"


def _layer(module: str) -> int:
    part = _part(module)
    if part == "schemas":
        return 0
    if module.endswith(".cli") or any(module == t or module.startswith(t + ".") for t in TOP):
        return 3
    return 2 if part in SERVICES else 1


def _service(module: str) -> str | None:
    part = _part(module)
    return part if part in SERVICES and not module.endswith(".cli") else None


def _imports(module: str, path: Path) -> Iterator[tuple[str, int]]:
    """(imported module of ours, line) for every import statement in the file."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        for name in targets:
            target = name
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target and target != module:
                yield target, node.lineno


GRAPH = {m: sorted(set(_imports(m, p))) for m, p in MODULES.items()}


def test_imports_go_down_the_layers_and_services_stay_apart() -> None:
    wrong = []
    for module, targets in GRAPH.items():
        for target, line in targets:
            upward = _layer(target) > _layer(module)
            sideways = _service(module) and _service(target) and _service(module) != _service(target)
            if upward or sideways:
                wrong.append(f"{MODULES[module].relative_to(ROOT)}:{line} imports {target}")
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong)


def test_no_import_cycle() -> None:
    # a package importing its own submodules (to re-export them) is not a cycle of two concerns
    edges = {
        m: {t for t, _ in targets if not t.startswith(m + ".") or _part(t) != _part(m)}
        for m, targets in GRAPH.items()
    }
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [])
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_function_level_imports_say_why() -> None:
    """An import inside a function is kept for a heavy or optional dependency only, and says so on its
    line (or, for a parenthesized import, on its first line)."""
    silent = []
    for module, path in MODULES.items():
        lines = path.read_text(encoding="utf-8").split("\n")
        tree = ast.parse("\n".join(lines))
        found = {
            node.lineno
            for fn in ast.walk(tree)
            if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef)
            for node in ast.walk(fn)
            if isinstance(node, ast.Import | ast.ImportFrom)
        }
        for line in sorted(found):
            text = lines[line - 1]
            # a comment on the line, or on the first of a group of consecutive imports
            group = line
            while group - 1 in found:
                group -= 1
            if "#" not in text and "#" not in lines[group - 1]:
                silent.append(f"{path.relative_to(ROOT)}:{line}: {text.strip()} ({module})")
    assert not silent, "function-level imports without a reason:\n" + "\n".join(silent)
