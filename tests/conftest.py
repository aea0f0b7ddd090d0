"""Shared fixtures: the model that ships with the project, and the optional golden data.

Golden data is the folder given by ``--ggml-py-golden-dir DIR`` or ``$GGML_PY_GOLDEN_DIR`` (the
options of the conformance suite), else ``../shared/peer`` beside the checkout. Tests that need
it ask for the ``peer`` fixture, which skips them cleanly when the folder is absent.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TINY_MODEL = REPO / "examples" / "tiny-gptj"
PEER = REPO.parent / "shared" / "peer"

# the numba backend's tests need the optional numba; without it the rest must pass all the same
HAS_NUMBA = importlib.util.find_spec("numba") is not None
needs_numba = pytest.mark.skipif(
    not HAS_NUMBA, reason="numba is not installed (ggml-py-gptj[numba])"
)


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    """The Hugging Face GPT-J folder shipped in ``examples/tiny-gptj``."""
    return TINY_MODEL


def golden_dir(config: pytest.Config) -> Path:
    """The golden data folder this run uses (it may not exist)."""
    given = config.getoption("--ggml-py-golden-dir", default=None) or os.environ.get(
        "GGML_PY_GOLDEN_DIR"
    )
    return Path(given) if given else PEER


@pytest.fixture(scope="session")
def peer(request: pytest.FixtureRequest) -> Path:
    """The golden data folder (outputs of torch, transformers and ggml), or skip."""
    folder = golden_dir(request.config)
    if not folder.is_dir():
        pytest.skip(f"golden data {folder} is not present")
    return folder


@pytest.fixture(scope="session")
def expected(peer: Path) -> dict:
    """``tiny-gptj/expected.json``: sizes, sha256s and greedy ids from the reference tools."""
    return json.loads((peer / "tiny-gptj" / "expected.json").read_text())


@pytest.fixture(scope="session", autouse=True)
def numba_kernels_compiled():
    """With numba installed, its kernels compiled (or loaded from numba's cache) before any test:
    the first compile on a machine announces itself on stderr, which tests of exact output (the
    default backend, auto, takes numba) must not see."""
    if HAS_NUMBA:
        from ggml_py.backend import create_backend
        from ggml_py.errors import BackendError

        try:
            create_backend("numba")
        except BackendError:  # a broken numba: auto passes it over, its own tests say why
            pass
