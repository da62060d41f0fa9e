"""The package layering: what may import what, no import cycles, no private names across
packages, heavy libraries imported lazily, and a test suite that collects without torch.

Layers (docs/layout.md): ``engine.core`` is the shared base; ``preprocess``, ``weights`` and
``export`` build on it alone; the runtime (the rest of ``engine``) composes them; ``benchmarks``
sits on top. Imports are read from the source (every ``import``, including those inside
functions), so a lazy import cannot hide a dependency.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("engine", "preprocess", "weights", "export", "benchmarks")
HEAVY = ("torch", "torchvision", "tensorrt", "onnxruntime", "insightface")


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((REPO / pkg).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> list[tuple[str, list[str], bool, int]]:
    """(imported module, names taken from it, at module level, line) for each import."""
    tree = ast.parse(path.read_text())
    top_level = {id(n) for n in tree.body}
    found = []
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.append((alias.name, [], id(node) in top_level, node.lineno))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            names = [a.name for a in node.names]
            found.append((base, names, id(node) in top_level, node.lineno))
    return found


def _resolve(module: str, names: list[str]) -> list[str]:
    """The project modules an import statement refers to (``from pkg import mod`` too)."""
    hits = [f"{module}.{n}" for n in names if f"{module}.{n}" in MODULES]
    if module in MODULES:
        hits.append(module)
    return hits


def _edges(module_level_only: bool = False) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in MODULES.items():
        for module, names, top, _line in _imports(name, path):
            if module_level_only and not top:
                continue
            for target in _resolve(module, names):
                if target != name:
                    graph[name].add(target)
    return graph


@pytest.mark.parametrize("package", ["preprocess", "weights", "export"])
def test_lower_layers_import_only_the_shared_base(package):
    """preprocess/, weights/ and export/ import engine.core and nothing else of the runtime,
    not even inside a function."""
    bad = []
    for name, path in MODULES.items():
        if name.split(".")[0] != package:
            continue
        for module, names, _top, line in _imports(name, path):
            top = module.split(".")[0]
            if top == "engine":
                targets = _resolve(module, names) or [module]
                for target in targets:
                    if not (target == "engine.core" or target.startswith("engine.core.")):
                        bad.append(f"{path.relative_to(REPO)}:{line} imports {target}")
            elif top == "benchmarks":
                bad.append(f"{path.relative_to(REPO)}:{line} imports {module}")
    assert not bad, "\n".join(bad)


def test_core_imports_nothing_above_it():
    bad = []
    for name, path in MODULES.items():
        if not name.startswith("engine.core"):
            continue
        for module, names, _top, line in _imports(name, path):
            if module.split(".")[0] in PACKAGES:
                for target in _resolve(module, names) or [module]:
                    if not target.startswith("engine.core") and target != "engine":
                        bad.append(f"{path.relative_to(REPO)}:{line} imports {target}")
    assert not bad, "\n".join(bad)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in list(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles():
    """No cycle among the project's modules, counting lazy imports too (a package's
    ``__init__`` re-exporting its own modules is not a cycle)."""
    graph = _edges()
    for name in list(graph):  # a package importing its submodules, and they the package
        graph[name] = {t for t in graph[name] if not (t.startswith(name + ".") and name != t)}
    assert not _cycles(graph)


def test_no_private_name_used_across_packages():
    bad = []
    for name, path in MODULES.items():
        pkg = name.split(".")[0]
        for module, names, _top, line in _imports(name, path):
            if module.split(".")[0] not in PACKAGES or module.split(".")[0] == pkg:
                continue
            private = [n for n in names if n.startswith("_") and n != "__version__"]
            private += [p for p in module.split(".") if p.startswith("_")]
            if private:
                bad.append(f"{path.relative_to(REPO)}:{line} takes {private} from {module}")
    assert not bad, "\n".join(bad)


def test_import_engine_and_preprocess_pulls_in_no_heavy_library():
    code = (
        "import sys, engine, preprocess, engine.cli, engine.api, engine.core.sidecar, "
        "engine.core.reduce, engine.pipeline, engine.executor, preprocess.crop, preprocess.faces, "
        "preprocess.scrfd, preprocess.video, weights\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_missing_dependency_names_the_extra(monkeypatch):
    from engine.core.deps import require
    from engine.core.errors import MissingDependencyError

    monkeypatch.setitem(sys.modules, "tensorrt", None)  # makes `import tensorrt` fail
    with pytest.raises(MissingDependencyError, match=r"deepfake-engine\[gpu\]") as info:
        require("tensorrt")
    assert isinstance(info.value, ImportError)


@pytest.mark.slow
def test_suite_collects_and_runs_without_torch(tmp_path):
    """As in an environment installed with `.[cpu,dev]`: with torch hidden, every test module
    is collected, and the tests that need torch are skipped with the reason."""
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.hide_torch", "--collect-only", "-q",
         "-p", "no:cacheprovider", str(REPO / "tests")],
        capture_output=True, text=True, cwd=REPO, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "error" not in proc.stdout.splitlines()[-1].lower(), proc.stdout[-2000:]
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.hide_torch", "-q", "-p",
         "no:cacheprovider", "-rs", str(REPO / "tests" / "export" / "test_checkpoint.py"),
         str(REPO / "tests" / "preprocess" / "test_crop.py")],
        capture_output=True, text=True, cwd=REPO, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:]
    assert "skipped" in run.stdout and "the `export` extra" in run.stdout


def test_extras_are_distinct():
    """No two extras of pyproject.toml install the same thing (``baseline`` and ``dlib`` once
    did)."""
    import tomllib

    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    seen: dict[tuple[str, ...], str] = {}
    for name, deps in extras.items():
        key = tuple(sorted(deps))
        assert key not in seen, f"extras {seen[key]!r} and {name!r} are identical"
        seen[key] = name
