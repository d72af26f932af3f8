"""Fingerprints of a stage's code, so that editing the package reruns the stages whose logic changed.

Snakemake's code trigger covers a rule's ``script:`` file only, and our scripts are thin adapters: the logic
lives in ``finet2i.stages.<stage>`` and the modules it imports. Each rule therefore carries
``params: code=script_code("workflow_scripts/<stage>.py")`` (rules/common.smk), a hash of the finet2i modules
its script imports and of every finet2i module they import (transitively, imports inside functions included).

What the hash ignores, so that harmless edits do not rerun GPU stages:

* comments, blank lines, line breaks inside brackets, spacing and docstrings (the hash is taken over the
  tokens that remain; unlike ``ast.dump`` that does not change with each Python release, but Python 3.12
  tokenises f-strings apart, so moving a finished run between 3.11 and 3.12 reruns its stages: use one
  Python per project, or ``snakemake --cleanup-metadata`` on the outputs you trust);
* the plumbing modules in ``INFRASTRUCTURE`` (file conventions, config validation, model specs, the
  script adapter): they move records, they do not decide them. A change there that does change outputs
  needs a forced rerun (``snakemake --forcerun <rule>``).

Pure standard library and no imports of the modules it reads: the Snakefile calls it at parse time and
``snakemake -n`` must stay light.
"""

from __future__ import annotations

import ast
import hashlib
import io
import tokenize
from functools import cache
from pathlib import Path

PACKAGE = "finet2i"
PACKAGE_ROOT = Path(__file__).resolve().parents[1]

INFRASTRUCTURE = frozenset({
    "finet2i",  # the package's __init__
    "finet2i.core",
    "finet2i.core.shards",
    "finet2i.core.codehash",
    "finet2i.core.runner",
    "finet2i.core.settings",
    "finet2i.core.pipeline",
    "finet2i.models.spec",
    "finet2i.workflow",
    "finet2i.workflow.config",
    "finet2i.workflow.adapter",
    "finet2i.workflow.params",
    "finet2i.plumbing.embeddings",
})

_SKIPPED_TOKENS = {tokenize.COMMENT, tokenize.NL, tokenize.ENCODING, tokenize.ENDMARKER}


def module_file(name: str, root: Path = PACKAGE_ROOT) -> Path | None:
    """The source file of a finet2i module, without importing it (None for other packages)."""
    parts = name.split(".")
    if parts[0] != PACKAGE:
        return None
    base = root.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imported_modules(tree: ast.AST, name: str, is_package: bool, root: Path) -> set[str]:
    """finet2i modules named by the imports anywhere in tree (``from finet2i import shards`` -> finet2i.core.shards)."""
    found: set[str] = set()
    package = name if is_package else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            found.add(base)
            # `from pkg import mod` imports a module when pkg/mod.py exists, a name otherwise
            found.update(f"{base}.{a.name}" for a in node.names if module_file(f"{base}.{a.name}", root))
    return {m for m in found if module_file(m, root) is not None}


def _docstring_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
                    and isinstance(first.value.value, str):
                lines.add(first.lineno)
    return lines


def normalised_source(source: str) -> str:
    """The module's tokens without comments, layout-only line breaks, spacing and docstrings."""
    skip_lines = _docstring_lines(ast.parse(source))
    out: list[str] = []
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type in _SKIPPED_TOKENS:
            continue
        if tok.type == tokenize.STRING and tok.start[0] in skip_lines:
            continue
        out.append(f"{tok.type}:{tok.string}")
    return "\n".join(out)


def _module_digest(path: Path) -> str:
    st = path.stat()
    return _digest(path, st.st_mtime_ns, st.st_size)


@cache
def _digest(path: Path, mtime_ns: int, size: int) -> str:
    """Cached per file version: many rules share backends, and tokenising is the slow part."""
    return hashlib.sha256(normalised_source(path.read_text(encoding="utf-8")).encode()).hexdigest()


def code_closure(*modules: str, root: Path = PACKAGE_ROOT) -> dict[str, Path]:
    """Every finet2i module reachable from modules by imports, minus INFRASTRUCTURE, with its file."""
    todo = list(modules)
    seen: dict[str, Path] = {}
    while todo:
        name = todo.pop()
        if name in seen or name in INFRASTRUCTURE:
            continue
        path = module_file(name, root)
        if path is None:
            raise ValueError(f"code_fingerprint: no module {name!r} under {root}")
        seen[name] = path
        # importing a.b.c runs the __init__ of a and a.b first
        todo.extend(name.rsplit(".", k)[0] for k in range(1, name.count(".") + 1))
        todo.extend(_module_imports(name, path, root))
    return seen


def _module_imports(name: str, path: Path, root: Path) -> frozenset[str]:
    st = path.stat()
    return _imports_of_version(name, path, root, st.st_mtime_ns, st.st_size)


@cache
def _imports_of_version(name: str, path: Path, root: Path, mtime_ns: int, size: int) -> frozenset[str]:
    """Cached per file version: ~40 rules share most modules, and parsing is the slow part of planning."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return frozenset(_imported_modules(tree, name, path.name == "__init__.py", root))


def code_fingerprint(*modules: str, root: Path = PACKAGE_ROOT) -> str:
    """A short hash of the code that decides a stage's outputs (see the module docstring)."""
    h = hashlib.sha256()
    for name, path in sorted(code_closure(*modules, root=root).items()):
        h.update(name.encode() + b"\0" + _module_digest(path).encode() + b"\0")
    return h.hexdigest()[:16]


def script_fingerprint(script: str | Path, root: Path = PACKAGE_ROOT) -> str:
    """code_fingerprint of the finet2i modules a workflow script imports (the script itself is Snakemake's)."""
    path = Path(script)
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    modules = _imported_modules(tree, "__main__", False, root)
    if not modules:
        raise ValueError(f"{path}: imports no finet2i module; a workflow script is an adapter over one")
    return code_fingerprint(*sorted(modules), root=root)


def source_digest(path: str | Path) -> str:
    """A short hash of one script's tokens (comments, layout and docstrings left out): what a batch rule records
    of the stage script it loads, since Snakemake's own code trigger sees the batch script only."""
    return _module_digest(Path(path))[:16]
