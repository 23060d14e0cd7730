"""The package's shape (issue 11): one concern per module, each small and saying its job."""
from __future__ import annotations

from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "benchbench"
MODULES = sorted(p for p in PKG.rglob("*.py") if "__pycache__" not in p.parts)
MAX_LINES = 420  # "about 400": a module past this wants splitting by concern


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PKG)))
def test_module_is_small_and_its_first_line_says_its_job(path):
    lines = path.read_text().splitlines()
    assert len(lines) <= MAX_LINES, f"{path.name}: {len(lines)} lines; split it by concern"
    if not lines:
        return  # an empty __init__.py
    first = lines[0]
    assert first.startswith('"""') and len(first.strip('"').strip()) > 10, (
        f"{path.name}: the first line should be a docstring saying the module's one job")
    assert not any(ln.startswith("# ----") or ln.startswith("# ====") for ln in lines), (
        f"{path.name}: banner comments mark a module that wants to be two")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """benchbench module -> the benchbench modules it imports, at module level or inside a
    function (`from pkg import sub` is an edge to pkg.sub, not to pkg's __init__)."""
    import ast

    mods = {_module_name(p): p for p in MODULES}
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, p in mods.items():
        here = m if p.name == "__init__.py" else m.rpartition(".")[0]
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = here.split(".")[: len(here.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in mods]
                names = subs if len(subs) == len(node.names) else [base, *subs]
            else:
                continue
            for name in names:
                while name and name not in mods:
                    name = name.rpartition(".")[0]
                if name and name != m and name.startswith("benchbench"):
                    graph[m].add(name)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_import_graph_has_no_cycle():
    """Issue 23: checkpoint took abs_path from point, failures took Diverged from train, and
    transfer took run_task_to_row from point: lower modules reaching up closed circles."""
    graph = import_graph()
    assert "benchbench.paths" in graph["benchbench.checkpoint"]  # the graph sees inner imports
    assert cycles(graph) == []
