"""The package's import graph, read from the source with ``ast`` (nothing is imported).

Three rules keep the package readable from the bottom up (the layer table of docs/architecture.md):

* no import cycle, counting every intra-package import (module level and inside functions);
* no upward import: a module imports only modules of a lower layer or of its own package (see
  :data:`LAYERS`); two packages of one layer (``nn``, ``data`` and ``testing``; ``_extension``
  and ``kernels``; the applications) do not import each other;
* an intra-package import inside a function is allowed only where :data:`LOCAL_ALLOWED` says why
  it must load lazily (an optional heavy dependency).
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# The layers, lowest first: (package or module names, rank). A module belongs to the entry naming
# it or a package above it; it may import its own entry's modules and those of lower ranks.
LAYERS = [
    # 0: foundations with no intra-package imports, usable from anywhere above
    (("fact_fast",), 0),                            # the package root only: __version__, attaching kernels/
    (("fact_fast.config",), 0),                     # TrainConfig and its command line
    (("fact_fast.metrics",), 0),                    # metrics on numpy arrays
    (("fact_fast.utils",), 0),                      # checkpoint files, torch.distributed
    # 1: the kernels, knowing tensors only
    (("fact_fast._extension", "fact_fast._C"), 1),  # the compiled csrc/ (fact_fast._C) and its loader
    (("fact_fast.kernels",), 1),                    # Triton kernels (the checkout's kernels/)
    (("fact_fast.ops",), 2),                        # op front-ends, dispatch, reference implementations, tolerances
    (("fact_fast.nn",), 3),                         # modules and losses
    (("fact_fast.data",), 3),                       # datasets, transforms, label graph
    (("fact_fast.testing",), 3),                    # the op-checking harness: cases, comparisons, timing
    (("fact_fast.models",), 4),                     # FACT and the baselines behind one protocol
    (("fact_fast.engine",), 5),                     # training: loaders, the training and scoring loops
    (("fact_fast.inference",), 6),                  # trained checkpoints: load, score, threshold, explain, export
    (("fact_fast.reporting",), 7),                  # statistics, figures and pages of runs
    # 8: the command-line applications: each imports the library, never another application
    *((("fact_fast." + app,), 8) for app in ("train", "evaluate", "predict", "report", "export", "compare",
                                             "selftest")),
]

# (importing module, imported module) -> why it is imported inside a function
LOCAL_ALLOWED = {
    # the compiled extension is optional (a source checkout may not have built it); loading it is
    # _extension's job, which reports a missing or broken build instead of failing at import
    ("fact_fast._extension", "fact_fast._C"): "optional compiled extension",
    ("fact_fast.testing.environment", "fact_fast._C"): "optional compiled extension (its file is inspected)",
    # Triton kernel modules import triton (optional) and, under TRITON_INTERPRET=1, must be imported
    # after the variable is set: the op front-ends import them when a Triton backend first runs
    ("fact_fast.ops.attention", "fact_fast.kernels.attention"): "Triton kernels, loaded when first run",
    ("fact_fast.ops.fuzzy", "fact_fast.kernels.fuzzy"): "Triton kernels, loaded when first run",
    ("fact_fast.ops.gcn", "fact_fast.kernels.gcn"): "Triton kernels, loaded when first run",
    ("fact_fast.ops.vq", "fact_fast.kernels.vq"): "Triton kernels, loaded when first run",
    # selftest sets TRITON_INTERPRET=1 on CPU before the harness imports fact_fast.ops (which imports
    # triton.language through torch._dynamo); see fact_fast/selftest.py
    ("fact_fast.selftest", "fact_fast.testing.environment"): "imports fact_fast.ops: after TRITON_INTERPRET",
    ("fact_fast.selftest", "fact_fast.testing.run"): "imports fact_fast.ops: after TRITON_INTERPRET",
}

def _modules() -> dict[str, Path]:
    """Module name -> source file, for fact_fast/ and the checkout's kernels/ (fact_fast.kernels)."""
    found = {}
    for base, prefix in ((ROOT / "fact_fast", "fact_fast"), (ROOT / "kernels", "fact_fast.kernels")):
        for path in sorted(base.rglob("*.py")):
            parts = list(path.relative_to(base).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join([prefix, *parts])] = path
    return found


MODULES = _modules()
COMPILED = {"fact_fast._C"}


def _targets(module: str, path: Path, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The fact_fast modules an import statement loads (``from pkg import sub`` names pkg.sub)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name == "fact_fast" or a.name.startswith("fact_fast.")]
    if node.level:
        package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        base = ".".join(package[:len(package) - node.level + 1] + ([node.module] if node.module else []))
    else:
        base = node.module or ""
    if base != "fact_fast" and not base.startswith("fact_fast."):
        return []
    return [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES or f"{base}.{a.name}" in COMPILED else base
            for a in node.names]


def _imports() -> list[tuple[str, str, bool, int]]:
    """Every intra-package import: (importer, imported, inside a function, line)."""
    edges = set()
    for module, path in MODULES.items():
        def walk(node, local):
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.Import, ast.ImportFrom)):
                    edges.update((module, t, local, child.lineno) for t in _targets(module, path, child) if t != module)
                walk(child, local or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))
        walk(ast.parse(path.read_text(), str(path)), False)
    return sorted(edges)


EDGES = _imports()


def _layer(module: str) -> tuple[str, int] | None:
    """(the layer entry's first name, its rank); the root entry holds the root module only."""
    for names, rank in LAYERS:
        if any(module == n or (n != "fact_fast" and module.startswith(n + ".")) for n in names):
            return names[0], rank
    return None


def test_every_module_has_a_layer():
    missing = [m for m in MODULES if _layer(m) is None]
    assert not missing, f"modules in no layer (add them to LAYERS and docs/architecture.md): {missing}"


def test_no_import_cycle():
    graph: dict[str, set] = {m: set() for m in MODULES}
    for a, b, _, _ in EDGES:
        if b in graph:
            graph[a].add(b)
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    cycles = []

    def visit(node, path):
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_no_upward_import():
    bad = []
    for a, b, _, line in EDGES:
        if _layer(a) is None or _layer(b) is None:
            continue  # test_every_module_has_a_layer names it
        (pa, ra), (pb, rb) = _layer(a), _layer(b)
        if pa != pb and rb >= ra:
            bad.append(f"{MODULES[a].relative_to(ROOT)}:{line}: {a} (layer {ra}) imports {b} (layer {rb})")
    assert not bad, "imports against the layers:\n" + "\n".join(bad)


def test_function_local_imports_are_only_the_listed_lazy_ones():
    local = {(a, b): line for a, b, is_local, line in EDGES if is_local}
    unlisted = [f"{MODULES[a].relative_to(ROOT)}:{line}: {a} imports {b} inside a function"
                for (a, b), line in sorted(local.items()) if (a, b) not in LOCAL_ALLOWED]
    assert not unlisted, ("import these at module level, or list them in LOCAL_ALLOWED with the reason they "
                          "must load lazily:\n" + "\n".join(unlisted))
    stale = sorted(set(LOCAL_ALLOWED) - set(local))
    assert not stale, f"entries no import needs any more (delete them): {stale}"
