"""The layout shows the architecture, and the imports keep to it (README, "Layout"):

- no import circles between the suite's modules, module-level or deferred;
- no upward imports: each package imports only packages of a lower layer (below);
- the report, the statistics, the worker machinery and the A/B coordinator never import
  TensorFlow (read statically, and ``python -m bench report --help`` / ``compare --help`` run
  in a fresh interpreter with TensorFlow made unimportable);
- the implementations know nothing of timing, statistics, reports or the A/B check.
"""

from __future__ import annotations

import ast
import subprocess
import sys
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
    found = set()
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
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
    mods, problems = modules(), []
    for name, path in mods.items():
        tf_free = name in TF_FREE_MODULES or any(
            name == p or name.startswith(p + ".") for p in TF_FREE
        )
        if not tf_free:
            continue
        for dep in imports_of(path, name):
            if dep.split(".")[0] in FRAMEWORKS:
                problems.append(f"{name} imports {dep}")
    assert not problems, "\n".join(problems)


def test_implementations_know_nothing_of_timing_or_reports():
    for name, deps in graph().items():
        if name.startswith("implementations"):
            bad = [d for d in deps if d.startswith("bench.") and not d.startswith("bench.tasks")]
            assert not bad, f"{name} imports {bad}"


@pytest.mark.integration
@pytest.mark.parametrize("command", ["report", "compare"])
def test_the_report_and_compare_commands_start_without_tensorflow(command):
    code = (
        "import sys\n"
        "for name in ('tensorflow', 'keras', 'jax'): sys.modules[name] = None\n"
        "from bench.__main__ import main\n"
        "try:\n"
        f"    main(['{command}', '--help'])\n"
        "except SystemExit as e:\n"
        "    assert e.code in (0, None), e.code\n"
        "loaded = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')\n"
        "          and sys.modules[m] is not None]\n"
        "assert not loaded, loaded\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "usage" in proc.stdout.lower()
