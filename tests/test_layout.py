"""The layout shows the architecture, and the imports keep to it (README, "Layout"):

- no import circles between the suite's modules, module-level or deferred;
- no upward imports: each package imports only packages of a lower layer (below);
- the report, the statistics, the worker machinery and the A/B coordinator never import
  TensorFlow (read statically, and ``python -m bench report --help`` / ``compare --help`` run
  in a fresh interpreter with TensorFlow made unimportable);
- the implementations know nothing of timing, statistics, reports or the A/B check;
- no re-export blocks: no ``# noqa: F401`` imports kept for other modules, no star imports
  (outside the declared compatibility shim, ``bench/user_tasks.py``);
- a function-level import says why it is not at the top (``# lazy: why``: a heavy or
  optional import, or one that must run after an environment setting), and none imports
  TensorFlow in a module that has loaded it at import already.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Lower layers first: a module may import its own package and any package of a lower layer.
LAYERS = [
    {"bench.host", "bench.stats", "bench.workers", "bench.tfimport"},
    {"bench.tasks", "bench.user_tasks"},
    {"implementations"},
    {"bench.timing", "bench.convergence", "bench.distributed", "bench.jax"},
    {"bench.report"},
    {"bench.ab"},
    {"bench.benchmarks", "bench.__main__", "bench.pytest_plugin"},
]
# Never TensorFlow (nor Keras, JAX or the implementations, which import them).
TF_FREE = [
    "bench.host",
    "bench.stats",
    "bench.workers",
    "bench.report",
    "bench.__main__",
    "bench.pytest_plugin",  # loaded by every pytest run where the package is installed
]
TF_FREE_MODULES = [
    "bench.ab.cli",
    "bench.ab.bisect",
    "bench.ab.sides",
    "bench.ab.output",
    "bench.ab.jax_sides",
    "bench.timing.blocks",
    "bench.timing.profiles",
    "bench.timing.spec",
    "bench.timing.plan",  # the run's time plan (a module listed here may not exist yet)
    "bench.jax.client",
]
FRAMEWORKS = ("tensorflow", "keras", "jax", "implementations")


def modules() -> dict[str, Path]:
    out = {}
    for base in ("bench", "implementations"):
        for path in (ROOT / base).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def imports_of(path: Path, name: str) -> set[str]:
    """Every module ``path`` imports, at module level or inside functions."""
    return imports_in(ast.parse(path.read_text()), name, path)


def imports_in(tree: ast.AST, name: str, path: Path) -> set[str]:
    """Every module the imports in ``tree`` (of module ``name``, file ``path``) name."""
    found = set()
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            found.add(target)
            found |= {f"{target}.{alias.name}" for alias in node.names}
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    edges = {}
    for name, path in mods.items():
        deps = {d for d in imports_of(path, name) if d in mods and d != name}
        edges[name] = {d for d in deps if not name.startswith(d + ".")}  # a package's parent
    return edges


def layer_of(name: str) -> int | None:
    for i, layer in enumerate(LAYERS):
        if any(name == p or name.startswith(p + ".") for p in layer):
            return i
    return None


def package_of(name: str) -> str:
    for layer in LAYERS:
        for p in layer:
            if name == p or name.startswith(p + "."):
                return p
    return name


# The A/B worker and the worker loop load code from another tree or by path: not part of the
# package graph (they import the side's ``bench.tasks``, whatever its layout).
WORKER_SCRIPTS = {"bench.ab.worker"}


def test_every_module_has_a_place_in_the_layers():
    unplaced = [m for m in modules() if m not in ("bench",) and layer_of(m) is None]
    assert not unplaced, f"modules outside every layer: {unplaced}"


def test_no_import_circles():
    edges = graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for dep in sorted(edges.get(node, ())):
            if state.get(dep) == 1:
                cycle = stack[stack.index(dep) :] + [dep]
                pytest.fail("import circle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)


def test_no_upward_imports():
    problems = []
    for name, deps in graph().items():
        if name in WORKER_SCRIPTS or layer_of(name) is None:
            continue
        for dep in deps:
            if layer_of(dep) is None or package_of(dep) == package_of(name):
                continue
            if layer_of(dep) > layer_of(name):
                problems.append(f"{name} imports {dep} (a higher layer)")
    assert not problems, "\n".join(problems)


def test_the_report_statistics_workers_and_coordinator_never_import_tensorflow():
    mods, problems, loaded = modules(), [], load_at_import(FRAMEWORKS)
    for name, path in mods.items():
        tf_free = name in TF_FREE_MODULES or any(
            name == p or name.startswith(p + ".") for p in TF_FREE
        )
        if not tf_free:
            continue
        for dep in imports_of(path, name):
            if dep.split(".")[0] in FRAMEWORKS:
                problems.append(f"{name} imports {dep}")
        if name in loaded:
            problems.append(f"{name} loads TensorFlow, Keras or JAX at import (through a module)")
    assert not problems, "\n".join(problems)


def test_implementations_know_nothing_of_timing_or_reports():
    for name, deps in graph().items():
        if name.startswith("implementations"):
            bad = [d for d in deps if d.startswith("bench.") and not d.startswith("bench.tasks")]
            assert not bad, f"{name} imports {bad}"


# The import rules hold for the production code: bench/, implementations/ and conftest.py.
# bench/user_tasks.py is the declared compatibility shim (docs/regression.md): the one place
# that re-exports, so a BASE from before the layout change can still be measured.
SHIMS = {"bench.user_tasks"}
NOQA_F401 = re.compile(r"#\s*noqa:[^#]*\bF401\b")
LAZY = re.compile(r"#\s*lazy:\s*\S")
HEAVY = ("tensorflow", "keras")


def production_modules() -> dict[str, Path]:
    return {**modules(), "conftest": ROOT / "conftest.py"}


def where(path: Path, node: ast.AST) -> str:
    return f"{path.relative_to(ROOT)}:{node.lineno}"


def split_imports(tree: ast.Module) -> tuple[list[ast.stmt], list[ast.stmt]]:
    """A module's imports: those run when it is imported (module level, class bodies), and
    those inside functions. Imports under ``if TYPE_CHECKING:`` run in neither."""
    top: list[ast.stmt] = []
    inner: list[ast.stmt] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                (inner if in_function else top).append(child)
            elif isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                visit(ast.Module(body=child.orelse, type_ignores=[]), in_function)
            else:
                function = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)
                visit(child, in_function or isinstance(child, function))

    visit(tree, False)
    return top, inner


def targets(node: ast.stmt, name: str, path: Path) -> set[str]:
    """The modules one import statement may load (``imports_of`` for a single statement)."""
    return imports_in(node, name, path)


def with_packages(names: set[str]) -> set[str]:
    """Importing ``a.b.c`` runs ``a`` and ``a.b`` first."""
    out = set()
    for name in names:
        parts = name.split(".")
        out |= {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
    return out


def load_at_import(frameworks: tuple[str, ...] = HEAVY) -> set[str]:
    """The production modules whose import loads one of ``frameworks``: themselves, through
    their packages' ``__init__``, or through the project modules they import at top level."""
    mods = production_modules()
    top = {}
    for name, path in mods.items():
        first, _ = split_imports(ast.parse(path.read_text()))
        found = set()
        for node in first:
            found |= targets(node, name, path)
        top[name] = with_packages(found) | (with_packages({name}) - {name})
    loaded = {n for n, deps in top.items() if any(d.split(".")[0] in frameworks for d in deps)}
    while True:
        more = {n for n, deps in top.items() if n not in loaded and deps & loaded}
        if not more:
            return loaded
        loaded |= more


def test_no_re_export_blocks():
    """Callers import a name from the module that defines it: no ``# noqa: F401`` imports
    kept for others to import, and no star imports, outside the declared shim."""
    problems = []
    for name, path in modules().items():
        if name in SHIMS:
            continue
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            span = lines[node.lineno - 1 : node.end_lineno]
            if any(NOQA_F401.search(line) for line in span):
                problems.append(f"{where(path, node)}: an unused import kept (noqa: F401)")
            if any(alias.name == "*" for alias in node.names):
                problems.append(f"{where(path, node)}: a star import")
    assert not problems, "re-exports:\n" + "\n".join(problems)


def has_reason(lines: list[str], node: ast.stmt, import_lines: set[int]) -> bool:
    """A ``# lazy: why`` comment on the import's lines, or in the comment just above it (or
    above the run of function-level imports it belongs to)."""
    if any(LAZY.search(line) for line in lines[node.lineno - 1 : node.end_lineno]):
        return True
    above = node.lineno - 1
    while above in import_lines:
        above -= 1
    while above >= 1 and lines[above - 1].lstrip().startswith("#"):
        if LAZY.match(lines[above - 1].lstrip()):
            return True
        above -= 1
    return False


def test_a_function_level_import_says_why_it_is_not_at_the_top():
    """Only a heavy or optional import, or one that must run after an environment setting,
    waits for a function; its comment says which (``# lazy: TensorFlow, for the worker only``)."""
    problems = []
    for path in production_modules().values():
        lines = path.read_text().splitlines()
        _, inner = split_imports(ast.parse("\n".join(lines)))
        import_lines = {i for n in inner for i in range(n.lineno, n.end_lineno + 1)}
        problems += [
            f"{where(path, node)}: {ast.unparse(node)}"
            for node in inner
            if not has_reason(lines, node, import_lines)
        ]
    assert not problems, (
        f"{len(problems)} function-level imports without a '# lazy: why' comment:\n"
        + "\n".join(problems)
    )


def test_no_lazy_import_of_tensorflow_where_it_is_loaded_already():
    """A function-level import of TensorFlow or Keras (or of a module that imports them at
    its top) avoids nothing in a module that has loaded them at import."""
    loaded, problems = load_at_import(), []
    for name, path in production_modules().items():
        if name not in loaded:
            continue
        _, inner = split_imports(ast.parse(path.read_text()))
        for node in inner:
            heavy = sorted(
                t for t in targets(node, name, path) if t.split(".")[0] in HEAVY or t in loaded
            )
            if heavy:
                problems.append(f"{where(path, node)}: {', '.join(heavy)}")
    assert not problems, (
        "imported inside a function, though the module loads TensorFlow at import:\n"
        + "\n".join(problems)
    )
