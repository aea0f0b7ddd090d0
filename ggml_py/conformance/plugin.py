"""pytest plugin of the conformance suite: the ``--backend`` option and the suite's fixtures.

Registered through the ``pytest11`` entry point of ggml-py, so it is active in every pytest run
of an environment where ggml-py is installed; it only adds two options and fixtures whose names
start with ``conformance_``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import pytest

from ggml_py.backend import Backend, create_backend, installed_backends, resolve_backend_name

PEER_ENV_VAR = "GGML_PY_PEER"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("ggml-py conformance suite")
    group.addoption(
        "--backend",
        default=None,
        metavar="NAME",
        help="ggml-py backend for `pytest --pyargs ggml_py.conformance` "
        "(default: $GGML_PY_BACKEND, else numpy-blas)",
    )
    group.addoption(
        "--peer-dir",
        default=None,
        metavar="DIR",
        help="golden data folder holding tiny-gptj/ (default: $GGML_PY_PEER, else "
        "../shared/peer beside the ggml-py checkout)",
    )


def pytest_configure(config: pytest.Config) -> None:
    name = config.getoption("--backend")
    if name is not None and name not in installed_backends():
        known = ", ".join(sorted(installed_backends())) or "none"
        raise pytest.UsageError(f"--backend {name}: no such ggml-py backend (installed: {known})")


def pytest_report_header(config: pytest.Config) -> str | None:
    name = config.getoption("--backend")
    return None if name is None else f"ggml-py conformance backend: {name}"


@pytest.fixture(scope="session")
def conformance_backend_name(request: pytest.FixtureRequest) -> str:
    """Name of the backend under test."""
    return resolve_backend_name(request.config.getoption("--backend"))


@pytest.fixture(scope="session")
def conformance_make_backend(conformance_backend_name: str) -> Callable[..., Backend]:
    """``make(n_threads=None)``: a fresh instance of the backend under test."""
    return lambda n_threads=None: create_backend(conformance_backend_name, n_threads)


@pytest.fixture(scope="session")
def conformance_backend(conformance_make_backend: Callable[..., Backend]) -> Backend:
    """One shared instance of the backend under test, with two worker threads."""
    return conformance_make_backend(2)


@pytest.fixture(scope="session")
def conformance_peer(request: pytest.FixtureRequest) -> Path:
    """The golden data folder (``.../peer`` holding ``tiny-gptj/``), or skip."""
    option = request.config.getoption("--peer-dir") or os.environ.get(PEER_ENV_VAR)
    folder = Path(option) if option else Path(__file__).resolve().parents[3] / "shared" / "peer"
    if not (folder / "tiny-gptj").is_dir():
        pytest.skip(f"golden data {folder}/tiny-gptj is not present")
    return folder
