"""The examples in the docstrings of every module of ``ggml_py`` and ``ggml_py_backends`` run."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import ggml_py_backends
import pytest

import ggml_py

MODULES = [
    name
    for package in (ggml_py, ggml_py_backends)
    for name in [
        package.__name__,
        *(
            module.name
            for module in pkgutil.walk_packages(package.__path__, package.__name__ + ".")
        ),
    ]
    if not name.endswith(".__main__")  # importing it runs the command line
]

# What the optional `numba` extra installs: the numba backend's modules import it at the top, and
# CI's oldest environment runs without it.
OPTIONAL_DEPENDENCIES = {"numba", "llvmlite"}


def optional_import(name):
    """The module ``name``, or None when it needs an optional dependency that is not installed."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as error:
        if error.name not in OPTIONAL_DEPENDENCIES:
            raise
        return None


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_pass(name):
    module = optional_import(name)
    if module is None:
        pytest.skip(f"{name} needs the numba extra, which is not installed")
    results = doctest.testmod(module)
    assert results.failed == 0


def test_the_modules_have_examples_to_run():
    # Guards the discovery above: a walk that found no modules would pass every test vacuously.
    assert {"ggml_py.tokenizer", "ggml_py.formats.gguf", "ggml_py_backends.blocked_f16"} <= set(
        MODULES
    )
    finder = doctest.DocTestFinder()
    modules = [module for module in map(optional_import, MODULES) if module is not None]
    examples = sum(len(test.examples) for module in modules for test in finder.find(module))
    assert examples >= 70
