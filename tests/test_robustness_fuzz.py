"""Bounded fuzzing of every reader of untrusted input (spec/robustness.md).

Each test runs a campaign of ``tests/fuzz/campaigns.py`` in rounds of hypothesis examples with
fixed seeds, until its example budget or its time budget is spent, whichever comes first. Its
target fails on any exception but the project's own one-line errors, on a run longer than 5 s
and on an allocation peak beyond twice the input plus 1 MiB. With tests/test_checkpoint_fuzz.py
(mutated torch and safetensors files) this stays under the suite's 60 s fuzzing budget on two
cores, even on a busy machine; ``scripts/fuzz.py`` runs the same campaigns for as long as asked,
coverage-guided with atheris when it is installed. Inputs that once crashed a target are replayed
from tests/fixtures/crashers/<campaign>/.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO
from fuzz import targets
from fuzz.campaigns import CAMPAIGNS
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

CRASHERS = REPO / "tests" / "fixtures" / "crashers"

# Examples per campaign (about 30 s in all on an idle two-core machine), at most SECONDS each.
BUDGET = {
    "model": 1400,
    "zip": 500,
    "pickle": 1600,
    "safetensors": 1000,
    "tokenizer": 700,
    "text": 1000,
    "ids": 1000,
}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


SECONDS = 6.0
ROUND = 50


@pytest.mark.parametrize("campaign", sorted(BUDGET))
def test_fuzz_campaign(workdir, campaign):
    # Warm up on the seeds first: the first call in a fresh process pays for lazy imports and
    # caches, which the allocation check would otherwise count against the first example.
    for raw in CAMPAIGNS[campaign].seeds().values():
        with contextlib.suppress(AssertionError):
            CAMPAIGNS[campaign].run_bytes(raw, workdir)
    stop = time.monotonic() + SECONDS
    rounds = range(0, BUDGET[campaign], ROUND)
    for first_example in rounds:
        # A fixed seed per round: reproducible anywhere, and each round draws new examples.
        @seed(first_example)
        @settings(
            max_examples=ROUND,
            derandomize=False,
            deadline=None,  # the targets bound each example's time themselves (targets.TIME_LIMIT)
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(data=st.data())
        def run(data):
            CAMPAIGNS[campaign].draw(data, workdir)

        run()
        if time.monotonic() > stop:
            break


def test_the_long_run_is_one_command():
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "fuzz.py"), "--seconds", "0.5", "ids"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"ids: [1-9]\d* examples in 0\.5 s, no crash\n", result.stdout), (
        result.stdout
    )


def test_every_campaign_has_a_budget_or_runs_elsewhere():
    # "checkpoint" (mutated whole files) is tests/test_checkpoint_fuzz.py's job.
    assert set(CAMPAIGNS) == set(BUDGET) | {"checkpoint"}


# ------------------------------------------------------------------------------------- crashers


def crasher_cases():
    """(campaign, path) of each recorded crasher: ``crashers/<campaign>/<input file or folder>``."""
    return sorted(
        (folder.name, path)
        for folder in CRASHERS.iterdir()
        if folder.is_dir()
        for path in folder.iterdir()
    )


@pytest.mark.parametrize(
    "campaign, path", crasher_cases(), ids=lambda value: getattr(value, "name", value)
)
def test_recorded_crashers_stay_fixed(workdir, campaign, path):
    if path.is_dir():  # a tokenizer folder
        targets.tokenizer_folder({file.name: file.read_bytes() for file in path.iterdir()}, workdir)
    else:
        CAMPAIGNS[campaign].run_bytes(path.read_bytes(), workdir)


def test_every_crasher_is_described():
    described = json.loads((CRASHERS / "crashers.json").read_text())
    recorded = {f"{campaign}/{path.name}" for campaign, path in crasher_cases()}
    assert recorded == set(described) and all(described.values())
