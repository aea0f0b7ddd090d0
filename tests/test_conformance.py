"""The conformance suite as third parties run it: from an installed (non-editable) package, from
a project with its own ``--backend`` option, with and without the optional golden data; and the
pytest plugin that every pytest run of the environment loads."""

from __future__ import annotations

import shutil
from importlib import metadata

import pytest
from conftest import REPO, golden_dir, needs_numba
from test_backend import _run


def _suite(*args, cwd, env=None):
    """``pytest --pyargs ggml_py.conformance ARGS`` in a fresh interpreter (under a minute on a
    quiet machine; the timeout leaves room for a machine shared by several test runs)."""
    pytest_args = ["-m", "pytest", "-p", "no:cacheprovider", "--pyargs", "ggml_py.conformance"]
    return _run(*pytest_args, *args, cwd=cwd, env=env, timeout=1200)


def _assert_all_passed(result):
    output = result.stdout[-3000:] + result.stderr[-3000:]
    assert result.returncode == 0, output
    assert (
        " passed" in result.stdout
        and "skipped" not in result.stdout
        and "failed" not in result.stdout
    ), output


def test_the_plugin_loaded_into_every_pytest_run_imports_nothing_heavy():
    (entry,) = [
        ep for ep in metadata.entry_points(group="pytest11") if ep.name == "ggml_py_conformance"
    ]
    assert entry.value == "_ggml_py_pytest_plugin"
    code = (
        "import sys, _ggml_py_pytest_plugin; print(sorted({m.split('.')[0] for m in sys.modules}))"
    )
    result = _run("-c", code, cwd=REPO)
    loaded = result.stdout
    assert result.returncode == 0, result.stderr
    for heavy in ("ggml_py", "numpy", "ml_dtypes"):
        assert f"'{heavy}'" not in loaded


def test_the_suite_runs_complete_from_an_installed_package(tmp_path, request):
    # a regular (non-editable) install into a folder of its own, run from a folder elsewhere:
    # the golden data the suite needs comes with the package, nothing is skipped
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE", "_ggml_py_pytest_plugin.py"):
        shutil.copy(REPO / name, source / name)
    for name in ("ggml_py", "backends"):
        shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    site = tmp_path / "site"
    install = _run(
        "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
        "--target", str(site), str(source), cwd=tmp_path,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr[-3000:]
    assert (site / "ggml_py" / "conformance" / "data" / "hf-logits.npz").is_file()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {"PYTHONPATH": str(site)}
    args = ["--ggml-py-backend", "numpy-blas"]
    peer = golden_dir(request.config)
    if (peer / "tiny-gptj").is_dir():  # the optional data set, its option written as two words
        args += ["--ggml-py-golden-dir", str(peer)]
    result = _suite(*args, "-v", cwd=elsewhere, env=env)
    _assert_all_passed(result)
    assert f"ggml_py 0.1.0 in {site / 'ggml_py'}" in result.stdout  # the installed copy ran
    assert (
        "test_hugging_face.py::test_whole_prompts_match_hugging_face[q4_0] PASSED" in result.stdout
    )
    if "--ggml-py-golden-dir" in args:
        assert (
            "test_golden_dir.py::test_greedy_tokens_match_hugging_face_and_ggml[f16] PASSED"
            in result.stdout
        )


@pytest.mark.parametrize("backend", ["blocked-f16", pytest.param("numba", marks=needs_numba)])
def test_the_suite_passes_with_the_optional_data(backend, tmp_path, request):
    args = ["-q", "--ggml-py-backend", backend]
    peer = golden_dir(request.config)
    if (peer / "tiny-gptj").is_dir():
        args.append(f"--ggml-py-golden-dir={peer}")
    _assert_all_passed(_suite(*args, cwd=tmp_path))


def test_the_suite_passes_on_the_default_backend(tmp_path, monkeypatch):
    # no option: the suite tests `auto`, whose elementwise operations it calls before any model
    # is prepared (numba where the extra is installed, else numpy-blas)
    monkeypatch.delenv("GGML_PY_BACKEND", raising=False)
    result = _suite("-q", cwd=tmp_path)
    _assert_all_passed(result)


def test_a_projects_own_backend_option_does_not_clash(tmp_path):
    # a project whose conftest declares --backend: its own tests and the suite both run in it
    (tmp_path / "conftest.py").write_text(
        "def pytest_addoption(parser):\n    parser.addoption('--backend', default=None)\n"
    )
    (tmp_path / "test_own.py").write_text(
        "def test_own(request):\n    assert request.config.getoption('--backend') == 'mine'\n"
    )
    own = _run("-m", "pytest", "-q", "-p", "no:cacheprovider", "--backend", "mine", cwd=tmp_path)
    assert own.returncode == 0 and "1 passed" in own.stdout, own.stdout + own.stderr
    suite = _suite("-q", "--ggml-py-backend", "blocked-f16", "-k", "gelu", cwd=tmp_path)
    assert suite.returncode == 0 and " passed" in suite.stdout, suite.stdout + suite.stderr


def test_a_golden_dir_without_its_data_is_a_usage_error(tmp_path):
    result = _suite("-q", "--ggml-py-golden-dir", str(tmp_path), "-k", "gelu", cwd=tmp_path)
    assert result.returncode == 4
    assert f"--ggml-py-golden-dir {tmp_path}: the folder has no tiny-gptj/ folder" in result.stderr


def test_operations_run_before_the_model_level_tests(tmp_path):
    result = _suite("--collect-only", "-q", cwd=tmp_path)
    modules = [
        line.split("::")[0].rsplit("/", 1)[-1]
        for line in result.stdout.splitlines()
        if "::" in line
    ]
    order = list(dict.fromkeys(modules))
    assert order == ["test_operations.py", "test_graph.py", "test_hugging_face.py"], order


@pytest.mark.parametrize("form", ["option", "environment"])
def test_the_backend_comes_from_the_option_or_the_environment(tmp_path, form):
    if form == "option":
        result = _suite("-q", "--ggml-py-backend", "no-such-backend", cwd=tmp_path)
        assert result.returncode == 4  # pytest's usage error
        assert "--ggml-py-backend no-such-backend: no such ggml-py backend" in result.stderr
    else:
        result = _suite(
            "-q", "-x", "-k", "gelu", cwd=tmp_path, env={"GGML_PY_BACKEND": "no-such-backend"}
        )
        assert result.returncode == 1
        assert "unknown backend 'no-such-backend'" in result.stdout
