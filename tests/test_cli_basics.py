"""The command line's shared behaviour: entry points, usage errors, and CI running the README."""

from __future__ import annotations

import re
import subprocess
import sys

from conftest import REPO


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ggml_py", *args], capture_output=True, text=True, cwd=REPO
    )


def test_python_dash_m_shows_help():
    result = run_cli("--help")
    assert result.returncode == 0
    assert "usage: ggml-py" in result.stdout


def test_unknown_subcommand_is_a_usage_error():
    result = run_cli("no-such-command")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr


def test_ci_runs_the_readme_test_command():
    readme = (REPO / "README.md").read_text()
    blocks = re.findall(r"```(?:bash)?\n(.*?)```", readme, re.S)
    install, test_command = blocks[0].strip().splitlines()[:2]
    assert "pip install" in install and "ggml-py" in install
    assert "pytest" in test_command
    ci = subprocess.run(
        ["bash", "-c", "awk '/^```/{n++; next} n==1{print}' README.md | sed -n 2p"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert ci.stdout.strip() == test_command
    assert (
        "awk '/^```/{n++; next} n==1{print}' README.md | sed -n 2p"
        in (REPO / ".ci" / "run").read_text()
    )
