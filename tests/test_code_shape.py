"""The shape the developers' guide asks of ``src/``: no function over 80 lines, no module
over 400 (split along real seams), found by walking the syntax tree."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
MAX_FUNCTION_LINES = 80
MAX_MODULE_LINES = 400


def function_lengths(path: Path) -> list[tuple[str, int, int]]:
    """(qualified name, first line, lines) of every function and method, decorators included."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []

    def walk(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                first = min([child.lineno] + [d.lineno for d in child.decorator_list])
                found.append((f"{prefix}{child.name}", first, child.end_lineno - first + 1))
                walk(child, f"{prefix}{child.name}.")
            elif isinstance(child, ast.ClassDef):
                walk(child, f"{prefix}{child.name}.")
            else:
                walk(child, prefix)

    walk(tree, "")
    return found


def test_function_lengths_counts_a_hand_made_module(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("@decorator\ndef f(x):\n    def g():\n        return 1\n\n    return g\n\n\n"
                      "class C:\n    def method(self):\n        pass\n")
    assert function_lengths(module) == [("f", 1, 6), ("f.g", 3, 2), ("C.method", 10, 2)]


def test_no_function_over_80_lines_and_no_module_over_400():
    long_functions, long_modules = [], []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC)
        lines = len(path.read_text().splitlines())
        if lines > MAX_MODULE_LINES:
            long_modules.append(f"{rel}: {lines} lines")
        long_functions += [f"{rel}:{first} {name}: {n} lines" for name, first, n in function_lengths(path)
                           if n > MAX_FUNCTION_LINES]
    assert not long_functions and not long_modules, (
        f"functions over {MAX_FUNCTION_LINES} lines: {long_functions}; modules over {MAX_MODULE_LINES} lines: "
        f"{long_modules} (split along a real seam)")


# The packages of docs/ARCHITECTURE.md, lowest first: a module imports only its own package and
# those before it. The top (the step adapter, the params schema, the command line) imports anything
# and nothing imports it back.
LAYERS = ["io", "study", "data", "runtime", "results", "features", "classical", "training", "nas", "models",
          "report", "provenance", "top"]
TOP = {"step", "params", "__main__"}
# lazy imports up the layers, each for one narrow purpose (named in docs/ARCHITECTURE.md)
UPWARD_ALLOWED = {
    ("data.datapaths", "features.backbones"),  # the weights URL, to word an error message
}


def _layer_of(module: str) -> int:
    package = "top" if module in TOP else module.split(".")[0]
    if package not in LAYERS or package == "top" and module not in TOP:
        raise AssertionError(f"pipeline_lib.{module} is in no package of the layer map: move it into one "
                             "(or add the package to LAYERS and docs/ARCHITECTURE.md)")
    return LAYERS.index(package)


def test_every_module_lives_in_a_package_of_the_layer_map():
    root = SRC / "pipeline_lib"
    flat = sorted(p.stem for p in root.glob("*.py") if p.stem not in TOP | {"__init__"})
    packages = sorted(p.parent.name for p in root.glob("*/__init__.py"))
    assert flat == [] and packages == sorted(LAYERS[:-1]), (flat, packages)


def _imports(path: Path, module: str) -> set[str]:
    """pipeline_lib modules that ``module`` imports, relative names ("nas.ops", "io.errors")."""
    package = module.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[: len(package) - node.level + 1]
            if node.module:
                found.add(".".join(base + [node.module]))
            else:
                found.update(".".join(base + [alias.name]) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pipeline_lib."):
            found.add(node.module.removeprefix("pipeline_lib."))
    return found


def test_every_import_points_down_the_code_map():
    root = SRC / "pipeline_lib"
    upward = []
    for path in sorted(root.rglob("*.py")):
        if path.name == "__init__.py":
            continue
        module = ".".join(path.relative_to(root).with_suffix("").parts)
        for target in sorted(_imports(path, module)):
            if _layer_of(target) > _layer_of(module) and (module, target) not in UPWARD_ALLOWED:
                upward.append(f"{module} -> {target}")
    assert upward == [], f"imports up the layer map (docs/ARCHITECTURE.md): {upward}"
