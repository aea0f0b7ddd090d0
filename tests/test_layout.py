"""The shape of the package: what it installs and how its modules import one another."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO


def test_every_package_folder_is_listed_for_installation():
    # pyproject.toml lists the packages by hand (backends/ is renamed on installation), so a new
    # subpackage that is not added there would be missing from wheels. A folder of data files
    # counts too: Python imports any folder with a valid name, so setuptools warns at every build
    # when one is missing from the list, even though its package-data ships it.
    tomllib = pytest.importorskip("tomllib")
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {"ggml_py_backends": REPO / "backends"}
    folders.update(
        {
            ".".join(folder.relative_to(REPO).parts): folder
            for folder in [REPO / "ggml_py", *(REPO / "ggml_py").rglob("*")]
            if folder.is_dir() and folder.name.isidentifier() and folder.name != "__pycache__"
        }
    )
    assert sorted(setuptools["packages"]) == sorted(folders)
    assert setuptools["package-dir"] == {"ggml_py_backends": "backends"}
    assert not any((REPO / "backends").glob("*/__init__.py"))  # no subpackages to map


def _module_name(path: Path) -> str:
    """The import name of a source file of the installed packages (backends/ installs as
    ggml_py_backends)."""
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[0] == "backends":
        parts[0] = "ggml_py_backends"
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


SOURCES = {
    _module_name(path): path
    for folder in ("ggml_py", "backends")
    for path in sorted((REPO / folder).rglob("*.py"))
}


def _imported_modules(name: str, path: Path) -> set[str]:
    """The package's modules that importing ``name`` runs, through any import statement in it
    (function-level ones too): each imported module, the submodules named by ``from X import Y``,
    and the packages above them whose ``__init__`` runs first (not those ``name`` is inside)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets.add(base)
            targets.update(f"{base}.{alias.name}" for alias in node.names)
    ancestors_of_name = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 2)}
    modules = set()
    for target in targets:
        parts = target.split(".")
        for i in range(1, len(parts) + 1):
            module = ".".join(parts[:i])
            if module in SOURCES and module not in ancestors_of_name:
                modules.add(module)
    return modules


IMPORTS = {name: _imported_modules(name, path) for name, path in SOURCES.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    lowlink: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []

    def visit(node: str) -> None:
        index[node] = lowlink[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph[node]):
            if successor not in index:
                visit(successor)
                lowlink[node] = min(lowlink[node], lowlink[successor])
            elif successor in on_stack:
                lowlink[node] = min(lowlink[node], index[successor])
        if lowlink[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def test_the_import_graph_has_no_cycle():
    assert len(IMPORTS) > 30 and IMPORTS["ggml_py.model"]  # the parse found the package
    assert _cycles(IMPORTS) == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_library_never_imports_a_concrete_backend():
    # Backends are found through entry points only, like third-party ones.
    importers = [name for name, modules in IMPORTS.items() if "ggml_py_backends" in modules]
    assert [name for name in importers if not name.startswith("ggml_py_backends")] == []


def test_the_tokenizer_does_not_import_the_file_formats():
    # Model files depend on the tokenizer's byte alphabet and merge derivation, not the reverse.
    assert not any(name.startswith("ggml_py.formats") for name in IMPORTS["ggml_py.tokenizer"])


def test_the_public_api_resolves_and_the_docs_name_it():
    import ggml_py

    readme = (REPO / "README.md").read_text()
    for name in ggml_py.__all__:
        assert getattr(ggml_py, name) is not None
        assert f"`{name}`" in readme, name
    backend_spec = (REPO / "spec" / "backend.md").read_text()
    backend_author_api = ggml_py._LAZY.keys() & {
        "Backend",
        "WeightTensor",
        "Float32Ops",
        "default_thread_count",
        "set_blas_threads",
        "dequantize",
        "GGMLType",
    }
    assert len(backend_author_api) == 7
    for name in [*backend_author_api, "BackendError"]:
        assert f"`{name}" in backend_spec and f"`{name}" in readme, name


def test_importing_the_package_leaves_the_converters_for_later():
    script = "import sys, ggml_py; print('ggml_py.convert' in sys.modules, ggml_py.convert_hf)"
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert result.stdout.startswith("False <function convert_hf")
