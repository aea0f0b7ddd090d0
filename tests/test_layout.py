"""The shape of the package: what it installs and how its modules import one another."""

from __future__ import annotations

import pytest
from conftest import REPO


def test_every_package_folder_is_listed_for_installation():
    # pyproject.toml lists the packages by hand (backends/ is renamed on installation), so a new
    # subpackage that is not added there would be missing from wheels.
    tomllib = pytest.importorskip("tomllib")
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {"ggml_py_backends": REPO / "backends"}
    folders.update(
        {
            ".".join(init.parent.relative_to(REPO).parts): init.parent
            for init in (REPO / "ggml_py").rglob("__init__.py")
        }
    )
    assert sorted(setuptools["packages"]) == sorted(folders)
    assert setuptools["package-dir"] == {"ggml_py_backends": "backends"}
    assert not any((REPO / "backends").glob("*/__init__.py"))  # no subpackages to map
