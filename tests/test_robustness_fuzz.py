"""Bounded fuzzing of every reader of untrusted input (issue 8; spec/robustness.md).

Each test runs a campaign of ``tests/fuzz/campaigns.py`` for a fixed number of hypothesis
examples. Its target fails on any exception but the project's own one-line errors, on a run
longer than 5 s and on an allocation peak beyond twice the input plus 1 MiB. Together with
tests/test_checkpoint_fuzz.py (mutated torch and safetensors files) this is the suite's fuzzing
budget, under 60 s on two cores; ``scripts/fuzz.py`` runs the same campaigns for as long as asked,
coverage-guided with atheris when it is installed. Inputs that once crashed a target are replayed
from tests/fixtures/crashers/<campaign>/.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import REPO
from fuzz import targets
from fuzz.campaigns import CAMPAIGNS

CRASHERS = REPO / "tests" / "fixtures" / "crashers"

# Examples per campaign: about 40 s in all on two cores, with test_checkpoint_fuzz.py's 3 s.
BUDGET = {"model": 1400, "zip": 500, "pickle": 1600, "safetensors": 1000, "tokenizer": 700, "text": 1000, "ids": 1000}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@pytest.mark.parametrize("campaign", sorted(BUDGET))
def test_fuzz_campaign(workdir, campaign):
    @settings(
        max_examples=BUDGET[campaign],
        deadline=None,  # the targets bound each example's time themselves (targets.TIME_LIMIT)
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(data=st.data())
    def run(data):
        CAMPAIGNS[campaign].draw(data, workdir)

    run()


def test_every_campaign_has_a_budget_or_runs_elsewhere():
    # "checkpoint" (mutated whole files) is tests/test_checkpoint_fuzz.py's job.
    assert set(CAMPAIGNS) == set(BUDGET) | {"checkpoint"}


# ------------------------------------------------------------------------------------- crashers


def crasher_cases():
    """(campaign, path) of each recorded crasher: ``crashers/<campaign>/<input file or folder>``."""
    return sorted((folder.name, path) for folder in CRASHERS.iterdir() if folder.is_dir() for path in folder.iterdir())


@pytest.mark.parametrize("campaign, path", crasher_cases(), ids=lambda value: getattr(value, "name", value))
def test_recorded_crashers_stay_fixed(workdir, campaign, path):
    if path.is_dir():  # a tokenizer folder
        targets.tokenizer_folder({file.name: file.read_bytes() for file in path.iterdir()}, workdir)
    else:
        CAMPAIGNS[campaign].run_bytes(path.read_bytes(), workdir)


def test_every_crasher_is_described():
    described = json.loads((CRASHERS / "crashers.json").read_text())
    recorded = {f"{campaign}/{path.name}" for campaign, path in crasher_cases()}
    assert recorded == set(described) and all(described.values())
