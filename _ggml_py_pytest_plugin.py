"""The command-line options of ggml-py's backend conformance suite.

``pytest --pyargs ggml_py.conformance --ggml-py-backend NAME [--ggml-py-golden-dir DIR]``

pytest loads this module in every run of an environment where ggml-py is installed (the
``pytest11`` entry point), before it knows which tests will run. So it stays outside the
``ggml_py`` package and imports nothing but ``os`` and pytest at load time: importing ggml_py
(NumPy, ml_dtypes) would add about a second to every unrelated test run. Its options carry the
``--ggml-py-`` prefix so that they cannot clash with a project's own options. The suite's fixtures live in
``ggml_py/conformance/conftest.py``, which pytest loads only when it collects the suite.
"""

from __future__ import annotations

import os

import pytest

BACKEND_OPTION = "--ggml-py-backend"
GOLDEN_DIR_OPTION = "--ggml-py-golden-dir"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup(
        "ggml-py", "ggml-py backend conformance suite (--pyargs ggml_py.conformance)"
    )
    group.addoption(
        BACKEND_OPTION,
        default=None,
        metavar="NAME",
        help="the backend under test (default: $GGML_PY_BACKEND, else auto)",
    )
    group.addoption(
        GOLDEN_DIR_OPTION,
        default=None,
        metavar="DIR",
        help="a golden data folder holding tiny-gptj/, whose tests are added to the suite "
        "(default: $GGML_PY_GOLDEN_DIR; without either the suite uses the data it ships with)",
    )


def pytest_configure(config: pytest.Config) -> None:
    folder = config.getoption(GOLDEN_DIR_OPTION)
    if folder is not None and not os.path.isdir(os.path.join(folder, "tiny-gptj")):
        raise pytest.UsageError(
            f"{GOLDEN_DIR_OPTION} {folder}: the folder has no tiny-gptj/ folder"
        )
    name = config.getoption(BACKEND_OPTION)
    if name is None:
        return
    from ggml_py.backend import (
        installed_backends,
    )  # the suite is asked for: it imports ggml_py anyway

    if name not in installed_backends():
        known = ", ".join(sorted(installed_backends())) or "none"
        raise pytest.UsageError(
            f"{BACKEND_OPTION} {name}: no such ggml-py backend (installed: {known})"
        )


def pytest_report_header(config: pytest.Config) -> str | None:
    name = config.getoption(BACKEND_OPTION)
    if name is None:
        return None
    import ggml_py  # imported by pytest_configure already

    return f"ggml-py conformance suite: backend {name}, ggml_py {ggml_py.__version__} in {ggml_py.__path__[0]}"
