"""The conformance suite's fixtures and collection rules; pytest loads this file only when it
collects the suite. Its command-line options come from the always-loaded plugin
``_ggml_py_pytest_plugin`` (``--ggml-py-backend``, ``--ggml-py-golden-dir``).

- The backend under test: ``--ggml-py-backend NAME``, else ``$GGML_PY_BACKEND``, else
  ``auto``; new instances for every test.
- Golden data: the suite ships its own (``data/``); a larger data set is used only when given
  by ``--ggml-py-golden-dir DIR`` or ``$GGML_PY_GOLDEN_DIR`` (``test_golden_dir.py`` is not
  collected otherwise, so nothing is skipped by default).
- Order: operations first, then the graph, then the model files, so that ``-x`` stops at the
  broken operation rather than at a model whose logits are wrong because of it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from ggml_py.backend import Backend, create_backend, resolve_backend_name

GOLDEN_DIR_ENV_VAR = "GGML_PY_GOLDEN_DIR"
HERE = Path(__file__).resolve().parent
# modules in the order they run; the operations are what everything else is built from
MODULE_ORDER = ["test_operations.py", "test_graph.py", "test_hugging_face.py", "test_golden_dir.py"]


def golden_dir(config: pytest.Config) -> Path | None:
    """The optional golden data folder, checked: it must hold ``tiny-gptj/``."""
    given = config.getoption("--ggml-py-golden-dir", default=None) or os.environ.get(
        GOLDEN_DIR_ENV_VAR
    )
    if not given:
        return None
    folder = Path(given).expanduser()
    if not (folder / "tiny-gptj").is_dir():
        raise pytest.UsageError(f"golden data folder {folder} has no tiny-gptj/ folder")
    return folder


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    if collection_path.resolve() == HERE / "test_golden_dir.py" and golden_dir(config) is None:
        return True
    return None


def pytest_collection_modifyitems(items) -> None:
    # only this suite's items move, among the slots they already hold
    slots = [i for i, item in enumerate(items) if Path(item.path).resolve().parent == HERE]
    ordered = sorted(
        (items[i] for i in slots), key=lambda item: MODULE_ORDER.index(Path(item.path).name)
    )
    for slot, item in zip(slots, ordered, strict=True):
        items[slot] = item


@pytest.fixture(scope="session")
def conformance_backend_name(request: pytest.FixtureRequest) -> str:
    """Name of the backend under test."""
    return resolve_backend_name(request.config.getoption("--ggml-py-backend", default=None))


@pytest.fixture
def conformance_make_backend(conformance_backend_name: str) -> Callable[..., Backend]:
    """``make(n_threads)``: the instance of the backend under test with that many threads, made
    once per test (fresh instances keep a backend's buffers from piling up over the run)."""
    instances: dict[int | None, Backend] = {}

    def make(n_threads: int | None = None) -> Backend:
        if n_threads not in instances:
            instances[n_threads] = create_backend(conformance_backend_name, n_threads)
        return instances[n_threads]

    return make


@pytest.fixture
def conformance_backend(conformance_make_backend: Callable[..., Backend]) -> Backend:
    """The backend under test with two worker threads."""
    return conformance_make_backend(2)


@pytest.fixture(scope="session")
def conformance_golden_dir(request: pytest.FixtureRequest) -> Path:
    """The golden data folder given by option or environment variable (its tests are collected
    only when there is one)."""
    folder = golden_dir(request.config)
    assert folder is not None
    return folder
