"""The package's layers (docs/architecture.md, "What may import what"): no module imports a layer above its own
or a sibling package of its own layer, and no modules import each other in a circle (imports inside functions
count: they are imports all the same, and the code fingerprints follow them)."""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

from support.workflow import ROOT

# Bottom to top; docs/architecture.md shows the same table (test_the_architecture_page_shows_these_layers).
LAYERS: tuple[frozenset[str], ...] = (
    frozenset({"core"}),
    frozenset({"plumbing", "recipe"}),
    frozenset({"release", "models"}),
    frozenset({"sources", "reporting", "finetune"}),
    frozenset({"stages"}),
    frozenset({"workflow"}),
    frozenset({"preflight", "explore", "demo"}),
    frozenset({"cli"}),
)


def module_graph(package: Path) -> dict[str, set[str]]:
    """{module: the package modules it imports} for every module under ``package`` (a folder named finet2i)."""
    def name_of(path: Path) -> str:
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)

    files = {name_of(p): p for p in package.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        anchor = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = anchor.split(".")
                    base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
                found |= {f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names}
        graph[name] = {m for m in found if m in files and m != name}
    return graph


def violations(graph: Mapping[str, Iterable[str]], layers: tuple[frozenset[str], ...] = LAYERS) -> list[str]:
    layer = {pkg: i for i, pkgs in enumerate(layers) for pkg in pkgs}

    def top(module: str) -> str | None:
        parts = module.split(".")
        return parts[1] if len(parts) > 1 else None  # None: the root package (its __version__)

    out = []
    for module, deps in sorted(graph.items()):
        mine = top(module)
        if mine is not None and mine not in layer:
            out.append(f"{module}: package {mine!r} is in no layer (add it to LAYERS and docs/architecture.md)")
            continue
        for dep in sorted(deps):
            theirs = top(dep)
            if mine is None or theirs is None or theirs == mine:
                continue
            if theirs not in layer or layer[theirs] >= layer[mine]:
                out.append(f"{module} imports {dep}: {theirs} is not below {mine}")
    return out


def cycles(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            for w in children:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    group = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        group.append(w)
                        if w == v:
                            break
                    if len(group) > 1:
                        out.append(sorted(group))
    return out


def test_no_module_imports_upward_or_sideways():
    assert violations(module_graph(ROOT / "src" / "finet2i")) == []


def test_no_modules_import_each_other_in_a_circle():
    assert cycles(module_graph(ROOT / "src" / "finet2i")) == []


def test_the_checks_catch_an_upward_import_and_a_circle(tmp_path):
    """The two tests above fail when their rule is broken: a plumbing module importing a stage, and a knot of
    three modules (the one the model files used to form: spec -> fetch -> backends -> spec)."""
    pkg = tmp_path / "finet2i"
    files = {
        "__init__.py": "",
        "plumbing/__init__.py": "",
        "plumbing/images.py": "def f():\n    from finet2i.stages import guard\n",
        "stages/__init__.py": "",
        "stages/guard.py": "X = 1\n",
        "models/__init__.py": "",
        "models/spec.py": "def advice():\n    from finet2i.models.fetch import KNOWN\n",
        "models/fetch.py": "from finet2i.models.backends import aesthetic\nKNOWN = 1\n",
        "models/backends/__init__.py": "",
        "models/backends/aesthetic.py": "from finet2i.models.spec import advice\n",
    }
    for rel, text in files.items():
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_text(text)
    graph = module_graph(pkg)
    assert violations(graph) == ["finet2i.plumbing.images imports finet2i.stages.guard: stages is not below plumbing"]
    assert cycles(graph) == [["finet2i.models.backends.aesthetic", "finet2i.models.fetch", "finet2i.models.spec"]]


def test_the_architecture_page_shows_these_layers():
    page = (ROOT / "docs" / "architecture.md").read_text()
    for i, packages in enumerate(LAYERS):
        for pkg in packages:
            assert f"`{pkg}/`" in page, f"docs/architecture.md does not name layer {i}'s package {pkg}/"
