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


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_pass(name):
    results = doctest.testmod(importlib.import_module(name))
    assert results.failed == 0


def test_the_modules_have_examples_to_run():
    # Guards the discovery above: a walk that found no modules would pass every test vacuously.
    assert {"ggml_py.tokenizer", "ggml_py.formats.gguf", "ggml_py_backends.blocked_f16"} <= set(
        MODULES
    )
    finder = doctest.DocTestFinder()
    examples = sum(
        len(test.examples)
        for name in MODULES
        for test in finder.find(importlib.import_module(name))
    )
    assert examples >= 70
