"""The package layering: what may import what, no import cycles among modules or folders, no
private names across packages, heavy libraries imported lazily, and a test suite that collects
without torch.

Layers (docs/layout.md), bottom to top: ``core`` is the shared base; ``preprocess``, ``weights``
and ``network`` build on it alone; the runtime (``engine`` but its command line) composes them;
``export`` (ONNX export, training) uses the runtime; ``benchmarks`` use the runtime and
``export``; the command line (``engine.cli`` and ``engine.commands``) is the top layer, which may
reach every package. Imports are read from the source: every ``import`` (including those inside
functions, so a lazy import cannot hide a dependency), every ``importlib.import_module`` /
``__import__`` of a literal name, and every registry of module names (a module-level dict, list
or tuple whose strings name project modules, as ``engine.backends``' backends and
``engine.cli``'s commands), so an import behind a string cannot hide one either."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "engine", "preprocess", "weights", "network", "export", "benchmarks")
HEAVY = ("torch", "torchvision", "tensorrt", "onnxruntime", "insightface")
#: The command line: the top layer (``dfe train`` runs export/, ``dfe bench`` the benchmarks).
CLI = ("engine.cli", "engine.commands")


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((REPO / pkg).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


MODULES = _modules()


def _in(name: str, prefixes: tuple[str, ...] | str) -> bool:
    prefixes = (prefixes,) if isinstance(prefixes, str) else prefixes
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _named_module(value: object) -> str | None:
    """The project module a string names (``"pkg.mod"`` or ``"pkg.mod:attr"``), else None."""
    if not isinstance(value, str):
        return None
    module = value.split(":", 1)[0]
    return module if module in MODULES else None


def _dynamic_imports(tree: ast.Module) -> list[tuple[str, int, str]]:
    """(module, line, how) for each import made through a string: ``import_module`` /
    ``__import__`` of a literal, and the strings of module-level registries."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and node.args:
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            arg = node.args[0]
            if called in ("import_module", "__import__") and isinstance(arg, ast.Constant):
                module = _named_module(arg.value)
                if module:
                    found.append((module, node.lineno, f"{called}({arg.value!r})"))
    for node in tree.body:
        value = node.value if isinstance(node, (ast.Assign, ast.AnnAssign)) else None
        if isinstance(value, ast.Dict):
            items = [*value.keys, *value.values]
        elif isinstance(value, (ast.List, ast.Tuple, ast.Set)):
            items = list(value.elts)
        else:
            continue
        for item in items:
            if isinstance(item, ast.Constant):
                module = _named_module(item.value)
                if module:
                    found.append((module, item.lineno, f"registry {item.value!r}"))
    return found


def _imports(name: str, path: Path) -> list[tuple[str, list[str], bool, int]]:
    """(imported module, names taken from it, at module level, line) for each import, those
    made through strings included (never at module level: they run on use)."""
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
    for module, line, _how in _dynamic_imports(tree):
        found.append((module, [], False, line))
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


def _targets(name: str, path: Path):
    """(line, project module) for each project module ``name`` imports."""
    for module, names, _top, line in _imports(name, path):
        if module.split(".")[0] in PACKAGES:
            for target in _resolve(module, names) or [module]:
                yield line, target


def _violations(importer, allowed) -> list[str]:
    """``path:line imports target`` for each import of a module for which ``importer(name)``
    holds, of another package (or across the command line's border), not ``allowed``."""
    bad = []
    for name, path in MODULES.items():
        if not importer(name):
            continue
        for line, target in _targets(name, path):
            crosses = not _in(target, name.split(".")[0]) or _in(target, CLI) != _in(name, CLI)
            if crosses and not allowed(target):
                bad.append(f"{path.relative_to(REPO)}:{line} imports {target}")
    return bad


@pytest.mark.parametrize("package", ["preprocess", "weights", "network"])
def test_lower_layers_import_only_the_shared_base(package):
    """preprocess/, weights/ and network/ import core and nothing else of the project
    (but themselves), not even inside a function or through a string."""
    bad = _violations(lambda m: _in(m, package), lambda t: _in(t, (package, "core")))
    assert not bad, "\n".join(bad)


def test_the_runtime_never_imports_export_benchmarks_or_the_command_line():
    """The runtime (engine/ but engine.cli and engine.commands) uses the layers below it only:
    not export/ (training, ONNX export), not benchmarks/, not the command line, counting the
    imports behind its registries (the backends)."""
    below = ("core", "engine", "preprocess", "weights", "network")
    bad = _violations(
        lambda m: _in(m, "engine") and not _in(m, CLI), lambda t: _in(t, below) and not _in(t, CLI)
    )
    assert not bad, "\n".join(bad)


def test_export_and_benchmarks_stay_below_the_command_line():
    """export/ may use the runtime, benchmarks/ the runtime and export/; neither imports the
    command line (the benchmarks run ``dfe`` as a program) and export/ no benchmark."""
    bad = _violations(lambda m: _in(m, "export"), lambda t: not _in(t, ("benchmarks", *CLI)))
    bad += _violations(lambda m: _in(m, "benchmarks"), lambda t: not _in(t, CLI))
    assert not bad, "\n".join(bad)


def test_registries_and_import_module_are_followed():
    """The edges behind strings are seen: the backend registry, the command registry."""
    graph = _edges()
    assert "engine.backends.trt_backend" in graph["engine.backends"]
    assert "engine.backends.torch_backend" in graph["engine.backends"]
    assert "engine.commands.bench" in graph["engine.cli"]
    tree = ast.parse(
        "import importlib\nimportlib.import_module('engine.api')\nX = ['export.train']"
    )
    assert [m for m, _, _ in _dynamic_imports(tree)] == ["engine.api", "export.train"]


def test_core_imports_nothing_above_it():
    bad = []
    for name, path in MODULES.items():
        if not _in(name, "core"):
            continue
        for module, names, _top, line in _imports(name, path):
            if module.split(".")[0] in PACKAGES:
                for target in _resolve(module, names) or [module]:
                    if not _in(target, "core"):
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
    """No cycle among the project's modules, counting lazy imports and imports through strings
    (a submodule importing its own package is not a cycle: importing it imports the package
    first anyway; a package importing its submodules, as a registry does, is an edge)."""
    graph = _without_child_to_parent(_edges())
    assert not _cycles(graph)


def _without_child_to_parent(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    return {name: {t for t in ts if not name.startswith(t + ".")} for name, ts in graph.items()}


def test_the_cycle_check_sees_a_cycle_behind_the_backend_registry():
    """The cycle once hidden behind the registry's strings (api -> backends -> trt_backend ->
    trt_build -> quantize -> api) is found when it comes back."""
    graph = _without_child_to_parent(_edges())
    graph["engine.backends.trt_build"] = {*graph["engine.backends.trt_build"], "engine.api"}
    assert any("engine.backends.trt_backend" in c for c in _cycles(graph))


def _folder(name: str) -> str:
    """The folder a module sits in, dotted (``engine.backends``); the command line
    (``engine/cli.py`` and ``engine/commands/``) counts as one folder, the top one."""
    if _in(name, CLI):
        return "engine.commands"
    return ".".join(MODULES[name].relative_to(REPO).parent.parts)


def _folder_edges() -> dict[str, set[str]]:
    """Folder -> the folders its modules import (lazy and string imports counted), but a
    folder using its parent folder's modules: ``engine/backends`` reads ``engine/options.py``,
    the runtime's own ground, as any submodule imports its package first anyway."""
    graph: dict[str, set[str]] = defaultdict(set)
    for name, targets in _without_child_to_parent(_edges()).items():
        for target in targets:
            a, b = _folder(name), _folder(target)
            if a != b and not a.startswith(b + "."):
                graph[a].add(b)
    return graph


def test_no_folder_cycles():
    """Folders depend one way: no cycle among folders (``engine/backends`` and
    ``engine/optimize`` once imported each other: the TensorRT builder, engine cache and Q/DQ
    form are the TensorRT backend's, in ``engine/backends``; ``engine/optimize`` builds INT8
    graphs on top)."""
    graph = _folder_edges()
    assert not _cycles(graph), _cycles(graph)
    assert "engine.backends" in graph["engine.optimize"]
    assert "engine.optimize" not in graph["engine.backends"]


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
        "import sys, engine, preprocess, engine.cli, engine.api, core.sidecar, "
        "core.reduce, engine.pipeline, engine.executor, preprocess.crop, preprocess.faces, "
        "preprocess.scrfd, preprocess.video, weights, network\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_missing_dependency_names_the_extra(monkeypatch):
    from core.deps import require
    from core.errors import MissingDependencyError

    monkeypatch.setitem(sys.modules, "tensorrt", None)  # makes `import tensorrt` fail
    with pytest.raises(MissingDependencyError, match=r"deepfake-engine\[gpu\]") as info:
        require("tensorrt")
    assert isinstance(info.value, ImportError)


@pytest.mark.slow
def test_suite_collects_and_runs_without_torch(tmp_path):
    """As in an environment installed with `.[cpu,dev]`: with torch hidden, every test module
    is collected, and the tests that need torch are skipped with the reason (a module-level
    importorskip, a test's own, a `model` fixture), while the torch-free ones run: `dfe
    train`'s command line among them, which must parse and refuse bad labels before torch."""
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.hide_torch", "--collect-only", "-q",
         "-p", "no:cacheprovider", str(REPO / "tests")],
        capture_output=True, text=True, cwd=REPO, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "error" not in proc.stdout.splitlines()[-1].lower(), proc.stdout[-2000:]
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.hide_torch", "-q", "-p",
         "no:cacheprovider", "-rs", str(REPO / "tests" / "network" / "test_checkpoint.py"),
         str(REPO / "tests" / "preprocess" / "test_crop.py")],
        capture_output=True, text=True, cwd=REPO, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:]
    assert "skipped" in run.stdout and "the `export` extra" in run.stdout
    cli = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.hide_torch", "-q", "-p",
         "no:cacheprovider", "-rs", str(REPO / "tests" / "engine" / "commands" / "test_train.py")],
        capture_output=True, text=True, cwd=REPO, timeout=600,
    )  # fmt: skip
    assert cli.returncode == 0 and "skipped" not in cli.stdout, cli.stdout[-3000:]


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
