"""The package's import graph: no cycles, and no lower layer importing a higher one.

Layers, low to high: the library (`nn`, `losses`, `data`, `evaluation` and the top-level model
modules), `training`, then the commands (`cli`, `train`, `evaluate`, `predict`, ...). Every import
counts, also one inside a function.
"""
import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "lmsfa_jax"
LIBRARY_TOP_LEVEL = {"anchors", "distributed", "errors", "flops", "model", "reparam", "weights"}
LIBRARY_PACKAGES = {"nn", "losses", "data", "evaluation"}


def _modules() -> dict[str, pathlib.Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(name: str, path: pathlib.Path, modules: dict) -> set[str]:
    """lmsfa_jax modules that `name` imports (a `from package import submodule` names the submodule)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
    return {m for m in found if m in modules and m != name}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _layer(module: str) -> int:
    parts = module.split(".")
    if len(parts) == 1:
        return 0  # the package's own __init__: the public API re-exports
    if parts[1] in LIBRARY_PACKAGES or parts[1] in LIBRARY_TOP_LEVEL:
        return 0
    if parts[1] == "training":
        return 1
    return 2  # commands


def test_import_graph_has_no_cycle():
    graph = _graph()
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == "open":
                cycle = stack[stack.index(dep):] + [dep]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert len(state) == len(graph) > 40


def test_no_import_reaches_up_a_layer():
    bad = [f"{module} imports {dep}" for module, deps in _graph().items() for dep in deps
           if _layer(dep) > _layer(module) and module != "lmsfa_jax"]
    assert not bad, "\n".join(bad)


def test_the_graph_holds_known_edges():
    # Top-level, `from package import submodule` and function-level imports are all seen.
    graph = _graph()
    assert "lmsfa_jax.training.checkpoints" in graph["lmsfa_jax.training.loop"]
    assert "lmsfa_jax.nn.conv" in graph["lmsfa_jax.nn.head"]
    assert "lmsfa_jax.training.checkpoints" in graph["lmsfa_jax.cli"]  # imported inside load_model
    assert _layer("lmsfa_jax.data.pipeline") < _layer("lmsfa_jax.training.loop") < _layer("lmsfa_jax.cli")
