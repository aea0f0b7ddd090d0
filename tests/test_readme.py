"""The README's examples run as written, from the checkout root, after its first command's
install step: the rest of that command (convert, then run), every other shell block, and every
Python block, whose top-level ``print(...)  # output`` comments must match what it prints."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from conftest import REPO

README = (REPO / "README.md").read_text()
BLOCKS = re.findall(r"^```(\w*)\n(.*?)^```", README, re.S | re.M)
# The first block: the install-and-demo command, then the test command (run by CI, not here).
FIRST_COMMAND = BLOCKS[0][1].splitlines()[0]
INSTALL_STEPS = ("python3 -m venv", ". .venv/bin/activate", "pip install")


def demo_steps() -> list[str]:
    """The first command's steps after it has installed ggml-py (this environment has)."""
    steps = [step.strip() for step in FIRST_COMMAND.split(" && ")]
    installing = [i for i, step in enumerate(steps) if step.startswith(INSTALL_STEPS)]
    assert installing == list(range(len(installing))), "the install steps come first"
    assert len(steps) > len(installing), "the first command does more than install"
    return steps[len(installing) :]


def shell(command: str) -> subprocess.CompletedProcess:
    """``command`` in bash from the checkout root, with this environment's ``ggml-py`` first on
    the PATH (as after the README's `. .venv/bin/activate`)."""
    bin_dir = os.path.dirname(sys.executable)
    env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}
    return subprocess.run(
        ["bash", "-c", command], capture_output=True, text=True, cwd=REPO, env=env, timeout=600
    )


@pytest.fixture(scope="module")
def after_first_command() -> list[subprocess.CompletedProcess]:
    results = []
    for step in demo_steps():
        results.append(shell(step))
        assert results[-1].returncode == 0, f"{step}\n{results[-1].stderr[-3000:]}"
    return results


def test_first_command_runs_after_its_install_step(after_first_command):
    assert after_first_command[-1].stdout.strip()  # the demo prints what it generates


def test_shell_examples_run(after_first_command):
    for language, code in BLOCKS[1:]:
        if language in ("bash", "sh", "shell"):
            result = shell(code)
            assert result.returncode == 0, f"{code}\n{result.stderr[-3000:]}"


PYTHON_BLOCKS = [code for language, code in BLOCKS if language == "python"]


def test_readme_has_python_examples():
    assert PYTHON_BLOCKS


@pytest.mark.parametrize("code", PYTHON_BLOCKS)
def test_python_examples_run_and_print_what_their_comments_say(after_first_command, code):
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    promised = re.findall(r"^print\(.*\)\s+# (.+?)\s*$", code, re.M)
    for output in promised:
        assert output in result.stdout.splitlines(), (output, result.stdout)
