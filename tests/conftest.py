"""Shared fixtures: the model that ships with the project, and the optional golden data.

Golden data lives in ``../shared/peer`` beside the checkout. Tests that need it ask for the
``peer`` fixture, which skips them cleanly when the folder is absent.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TINY_MODEL = REPO / "examples" / "tiny-gptj"
PEER = REPO.parent / "shared" / "peer"


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    """The Hugging Face GPT-J folder shipped in ``examples/tiny-gptj``."""
    return TINY_MODEL


@pytest.fixture(scope="session")
def peer() -> Path:
    """``../shared/peer`` (golden outputs of torch, transformers and ggml), or skip."""
    if not PEER.is_dir():
        pytest.skip("golden data ../shared/peer is not present")
    return PEER


@pytest.fixture(scope="session")
def expected(peer: Path) -> dict:
    """``tiny-gptj/expected.json``: sizes, sha256s and greedy ids from the reference tools."""
    return json.loads((peer / "tiny-gptj" / "expected.json").read_text())
