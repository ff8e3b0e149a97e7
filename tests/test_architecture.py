"""The shape of the package: no import cycles, a core that names no game, one optimiser step.

These keep the clean-up of issue 37 from growing back: the loops never import the facade that builds them,
a game plugs in through :mod:`reverie.plugins`, and one method updates the networks.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).parents[1] / "src" / "reverie"
CORE = ("agent", "learner", "world_model", "rssm", "actor_critic", "online", "offline", "evaluation", "correction")
CORE += ("replay", "codecs", "checkpoint")


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, modules: set[str]) -> set[str]:
    """The package's modules that ``path`` imports anywhere (module level, functions, TYPE_CHECKING blocks)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            found |= {base} | {f"{base}.{alias.name}" for alias in node.names}
    out = set()
    for target in found:
        while target and target not in modules:
            target = target.rpartition(".")[0]
        if target and target != name:
            out.add(target)
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_cycle_finder_finds_a_planted_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_package_has_no_import_cycle() -> None:
    paths = {module_name(p): p for p in SRC.rglob("*.py")}
    graph = {name: imports(path, set(paths)) for name, path in paths.items()}
    assert graph["reverie.agent"] >= {"reverie.learner", "reverie.online", "reverie.offline"}  # the walk sees edges
    assert cycles(graph) == []


def test_the_core_names_no_game() -> None:
    for name in CORE:
        text = (SRC / f"{name}.py").read_text()
        assert not re.search(r"crafter|achievement|symbolic", text, re.I), f"{name}.py names a game"


def test_importing_the_learner_does_not_import_crafter() -> None:
    code = "import sys, reverie.learner, reverie.agent; print(sorted(m for m in sys.modules if 'crafter' in m))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_one_optimiser_step_in_the_package() -> None:
    calls = []
    for path in SRC.rglob("*.py"):
        if path.name == "baselines.py":  # the stand-alone BC baselines have their own optimiser
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if ">>>" not in line and re.search(r"\b\w*opt\w*\.step\(", line):
                calls.append(f"{path.name}:{number}")
    assert calls == ["learner.py:" + calls[0].split(":")[1]] if calls else False, calls
