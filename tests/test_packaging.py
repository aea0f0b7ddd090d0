"""What the project installs: the wheel's name, license and dependency floors, and the
environments CI tests them in (ruff's target Python included)."""

from __future__ import annotations

import email.parser
import json
import re
import shutil
import subprocess
import sys
import zipfile
from typing import NamedTuple

import pytest
from conftest import REPO

CI_RUN = (REPO / ".ci" / "run").read_text()


class WheelBuild(NamedTuple):
    wheel: zipfile.ZipFile
    log: str  # what pip and setuptools printed, verbosely


@pytest.fixture(scope="module")
def build(tmp_path_factory) -> WheelBuild:
    """The project's wheel, built offline from a copy of the files it is made of, and the log of
    its build."""
    source = tmp_path_factory.mktemp("source") / "project"
    # the checkout without what a wheel never holds (and a developer's own virtual environment)
    shutil.copytree(
        REPO,
        source,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", "tests", "examples"
        ),
    )
    out = tmp_path_factory.mktemp("wheel")
    pip_wheel = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--verbose",  # shows setuptools' own output, warnings included
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--wheel-dir",
            str(out),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert pip_wheel.returncode == 0, pip_wheel.stderr[-3000:]
    (path,) = out.glob("*.whl")
    with zipfile.ZipFile(path) as archive:
        yield WheelBuild(archive, pip_wheel.stdout + pip_wheel.stderr)


@pytest.fixture(scope="module")
def wheel(build: WheelBuild) -> zipfile.ZipFile:
    return build.wheel


def _metadata(wheel: zipfile.ZipFile):
    (name,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    return email.parser.Parser().parsestr(wheel.read(name).decode())


def test_wheel_is_named_apart_from_the_unrelated_ggml_py_distribution(wheel):
    # "ggml-py" on the package index is someone else's bindings to ggml (they import `ggml`)
    metadata = _metadata(wheel)
    assert metadata["Name"] == "ggml-py-gptj"
    assert wheel.filename.rsplit("/", 1)[-1].startswith("ggml_py_gptj-")
    (entry_points,) = [n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt")]
    assert "ggml-py = ggml_py.cli:main" in wheel.read(entry_points).decode()
    assert "ggml_py/__init__.py" in wheel.namelist()


def test_wheel_carries_the_mit_license(wheel):
    metadata = _metadata(wheel)
    assert metadata["License-Expression"] == "MIT"
    assert metadata["License-File"] == "LICENSE"
    (license_path,) = [n for n in wheel.namelist() if n.endswith(".dist-info/licenses/LICENSE")]
    text = wheel.read(license_path).decode()
    assert text.startswith("MIT License") and text == (REPO / "LICENSE").read_text()


def test_wheel_carries_the_conformance_suites_golden_data(wheel):
    # data files, not modules: they ship only through package-data
    data = REPO / "ggml_py" / "conformance" / "data"
    shipped = {
        name.removeprefix("ggml_py/conformance/data/"): wheel.read(name)
        for name in wheel.namelist()
        if name.startswith("ggml_py/conformance/data/")
    }
    assert {"expected.json", "hf-logits.npz", "ggml-model-q4_0.bin"} <= set(shipped)
    assert shipped == {path.name: path.read_bytes() for path in data.iterdir()}


def test_the_build_leaves_no_importable_folder_out_of_the_packages_list(build):
    # setuptools copies a folder that only package-data names, but warns (one banner per folder)
    # that it is absent from `packages`
    assert "copying ggml_py/conformance/data/expected.json" in build.log  # setuptools' output
    assert "is absent from the `packages` configuration" not in build.log


def test_ci_tests_the_oldest_python_and_dependency_floors_the_metadata_claims(wheel):
    metadata = _metadata(wheel)
    oldest = re.search(r"^environment oldest (\S+) \S+ (.*)$", CI_RUN, re.M)
    assert oldest, "the oldest environment line of .ci/run"
    assert metadata["Requires-Python"] == f">={oldest.group(1)}"
    pins = dict(pin.split("==") for pin in oldest.group(2).split())
    floors = dict(
        re.fullmatch(r"([\w-]+)>=([\d.]+)", requirement).groups()
        for requirement in metadata.get_all("Requires-Dist")
        if "extra ==" not in requirement
    )
    assert set(pins) == set(floors) == {"numpy", "ml_dtypes"}
    for name, floor in floors.items():
        # the pin is the floor's first release: numpy>=1.23 is tested as numpy==1.23.0
        assert pins[name] == floor + ".0" * (3 - len(floor.split("."))), name


def test_ci_tests_the_newest_python_with_the_newest_releases(wheel):
    classifiers = _metadata(wheel).get_all("Classifier")
    versions = [c.rsplit(" ", 1)[1] for c in classifiers if re.search(r":: 3\.\d+$", c)]
    newest = max(versions, key=lambda v: int(v.split(".")[1]))
    assert re.search(
        rf"^environment newest {re.escape(newest)} \S+ --upgrade numpy ml_dtypes$", CI_RUN, re.M
    )
    assert f"environment oldest {min(versions, key=lambda v: int(v.split('.')[1]))} " in CI_RUN


def test_ruff_lints_for_the_oldest_python_the_metadata_claims():
    # ruff's pyupgrade rules (UP) and B905 (zip's strict=, new in 3.10) follow target-version: set
    # below the floor, they keep code from using what every supported Python has
    tomllib = pytest.importorskip("tomllib")
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    floor = re.fullmatch(r">=3\.(\d+)", pyproject["project"]["requires-python"])
    assert floor, pyproject["project"]["requires-python"]
    assert pyproject["tool"]["ruff"]["target-version"] == f"py3{floor.group(1)}"


def test_the_wheel_installs_under_its_name_with_its_license(wheel, tmp_path):
    target = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
         "--target", str(target), wheel.filename],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr[-3000:]
    probe = (
        "import importlib.metadata as m, ggml_py, json\n"
        "d = m.distribution('ggml-py-gptj')\n"
        "print(json.dumps([ggml_py.__file__, d.version, d.metadata['License-Expression'],"
        " d.read_text('licenses/LICENSE')[:11]]))"
    )
    result = subprocess.run(
        [sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(target)!r})\n{probe}"],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    location, version, license_expression, license_text = json.loads(result.stdout)
    assert location.startswith(str(target))  # the installed copy, not the checkout
    assert (version, license_expression, license_text) == ("0.1.0", "MIT", "MIT License")
