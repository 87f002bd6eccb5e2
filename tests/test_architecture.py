"""The package graph points one way: core <- ml <- data <- train; core, ml <- serve; cluster on top.

    python -m pytest tests/test_architecture.py -s    # prints the package graph it checked

Walks every import (module level and inside functions, found with `ast`) of the shipped
packages and fails on an edge the design forbids, naming the file and line. A serving process
must need no training code; the data package knows nothing of training, serving or the CLI;
and no stage module imports a CLI (the CLI calls the stage's `main`, never the reverse).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# What each package may import (besides itself). The order is the layering, bottom first.
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "ml": {"core"},
    "data": {"core", "ml"},
    "train": {"core", "ml", "data"},
    "serve": {"core", "ml"},
    "cluster": {"core", "ml", "data", "train", "serve"},
}


def _imports(path: Path) -> list[tuple[str, int]]:
    """(imported module, line) for every absolute import in the file, at any depth."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.module, node.lineno))
            found += [(f"{node.module}.{alias.name}", node.lineno) for alias in node.names]
    return found


def package_edges() -> dict[tuple[str, str], list[str]]:
    edges: dict[tuple[str, str], list[str]] = defaultdict(list)
    for package in ALLOWED:
        for path in sorted((REPO / package).rglob("*.py")):
            for module, line in _imports(path):
                top = module.split(".")[0]
                where = f"{path.relative_to(REPO)}:{line}"
                if top in ALLOWED and top != package and where not in edges[(package, top)]:
                    edges[(package, top)].append(where)
    return edges


def test_every_import_follows_the_layering():
    edges = package_edges()
    print("\npackage graph (edges: import sites)")
    for (src, dst), sites in sorted(edges.items()):
        print(f"  {src:8s} -> {dst:8s} {len(sites):3d}")
    forbidden = [
        f"{site}: {src} imports {dst} (allowed for {src}: {', '.join(sorted(ALLOWED[src])) or 'nothing'})"
        for (src, dst), sites in sorted(edges.items())
        if dst not in ALLOWED[src]
        for site in sites
    ]
    assert not forbidden, "forbidden imports:\n" + "\n".join(forbidden)


def test_the_allowed_graph_has_no_cycle():
    seen: dict[str, int] = {}

    def visit(package: str, trail: list[str]) -> None:
        assert package not in trail, f"cycle: {' -> '.join([*trail, package])}"
        for dep in ALLOWED[package]:
            visit(dep, [*trail, package])
        seen[package] = 1

    for package in ALLOWED:
        visit(package, [])


# The typer apps. `core.cli` is not one: it is the stage runner (`stage_main`) every stage uses.
CLI_PACKAGES = ("data", "train", "serve", "cluster")


def test_no_stage_module_imports_a_cli():
    from cluster.stages import STAGES

    offenders = []
    for stage in STAGES.values():
        path = stage.module_file(REPO)
        assert path is not None, f"stage {stage.name}: module {stage.module} does not exist"
        for module, line in _imports(path):
            if module.split(".")[0] in CLI_PACKAGES and (module.split(".")[1:2] == ["cli"] or module.endswith("_cli")):
                offenders.append(f"{path.relative_to(REPO)}:{line}: stage {stage.name} imports {module}")
    assert not offenders, "\n".join(offenders)


def test_serving_needs_no_training_code_at_run_time():
    """Import the Serve application's modules in a fresh interpreter: no `train` module may load."""
    import subprocess
    import sys

    code = (
        "import sys, serve.app, serve.recommend, serve.generator, serve.engine, serve.catalog, serve.content, serve.page\n"
        "bad = sorted(m for m in sys.modules if m == 'train' or m.startswith('train.'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "", f"importing serve loaded training modules: {out.stdout.strip()}"
