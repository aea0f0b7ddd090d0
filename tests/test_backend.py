"""The backend registry, the shipped backends' own promises, and the conformance suite run the
way users run it: ``pytest --pyargs ggml_py.conformance --ggml-py-backend NAME`` from any folder, for
both shipped backends and for the out-of-tree example installed with pip."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from importlib import metadata

import numpy as np
import pytest
from conftest import REPO, needs_numba
from test_model import byte_model_file, write_model_file

import ggml_py
from ggml_py.backend import Backend, create_backend, installed_backends, resolve_backend_name
from ggml_py.errors import BackendError
from ggml_py.formats import TensorInfo
from ggml_py.formats.quant import GGMLType

SHIPPED = ["numpy-blas", "blocked-f16"]


def _run(*args, cwd, env=None, timeout=300):
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        timeout=timeout,
    )


def test_shipped_backends_are_registered_entry_points():
    entries = installed_backends()
    assert entries["numpy-blas"].target == "ggml_py_backends.numpy_blas:NumpyBlasBackend"
    assert entries["blocked-f16"].target == "ggml_py_backends.blocked_f16:BlockedF16Backend"
    for name in SHIPPED:
        assert entries[name].distribution.startswith("ggml-py-gptj ")
        backend = create_backend(name, n_threads=2)
        assert isinstance(backend, Backend) and backend.name == name


@pytest.mark.parametrize("backend", SHIPPED)
def test_load_works_from_a_folder_with_its_own_backends_package(backend, tmp_path):
    # A project folder with a package called `backends` (common in web projects) comes first on
    # sys.path; the shipped backends must still import, so they are installed under another name.
    project_backends = tmp_path / "backends"
    project_backends.mkdir()
    (project_backends / "__init__.py").write_text('"""The project\'s own backends."""\n')
    (project_backends / "numpy_blas.py").write_text("raise ImportError('the wrong module')\n")
    model_path = tmp_path / "bytes.bin"
    write_model_file(model_path, byte_model_file())
    script = (
        "import backends, ggml_py\n"
        f"assert backends.__file__.startswith({str(tmp_path)!r})\n"
        f"model = ggml_py.load({str(model_path)!r}, backend={backend!r})\n"
        "print(model.backend.name, model.eval([1, 2], n_past=0).shape)\n"
    )
    result = _run("-c", script, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == [backend, "(2,", "257)"]


def test_the_distribution_installs_no_generic_top_level_name():
    top_level = metadata.distribution("ggml-py-gptj").read_text("top_level.txt").split()
    # _ggml_py_pytest_plugin: the conformance suite's options, which pytest loads into every run
    assert sorted(top_level) == ["_ggml_py_pytest_plugin", "ggml_py", "ggml_py_backends"]


def test_backend_choice_order_is_argument_then_environment_then_auto(monkeypatch):
    monkeypatch.delenv("GGML_PY_BACKEND", raising=False)
    assert resolve_backend_name() == "auto"
    assert create_backend().name == "auto"
    monkeypatch.setenv("GGML_PY_BACKEND", "blocked-f16")
    assert resolve_backend_name() == "blocked-f16"
    assert create_backend().name == "blocked-f16"
    assert resolve_backend_name("numpy-blas") == "numpy-blas"


def test_unknown_backend_and_bad_thread_count_are_backend_errors():
    with pytest.raises(
        BackendError, match=r"unknown backend 'gpu' \(installed: .*blocked-f16.*numpy-blas"
    ):
        create_backend("gpu")
    with pytest.raises(BackendError, match="n_threads must be at least 1"):
        create_backend("blocked-f16", n_threads=0)


def test_numpy_blas_refuses_a_model_larger_than_available_memory_before_decoding_anything():
    from ggml_py_backends.numpy_blas import available_memory

    available = available_memory()
    assert available is not None and available > 0
    # one f16 matrix whose f32 copy needs twice what is available: memory freed meanwhile by other
    # processes cannot make it fit
    rows = 2 * available // (4 * 4096)
    empty = np.zeros(0, dtype=np.uint8)  # decoding it would fail loudly
    huge = TensorInfo("lm_head.weight", GGMLType.F16, (rows, 4096), 0, rows * 4096 * 2, empty)
    with pytest.raises(
        BackendError,
        match=r"model\.bin: numpy-blas needs .* GiB .* available; use the numba or blocked-f16",
    ):
        create_backend("numpy-blas").prepare("model.bin", {"lm_head.weight": huge})


def test_numpy_blas_refuses_weights_that_fit_only_without_room_to_run():
    from ggml_py_backends.numpy_blas import available_memory, running_reserve

    available = available_memory()
    assert available is not None and available > 0
    # float32 weights 256 MiB short of what is available: they would fit, the run would not
    rows = (available - 2**28) // (4 * 4096)
    assert running_reserve(4 * rows * 4096) >= 2**30
    empty = np.zeros(0, dtype=np.uint8)  # decoding it would fail loudly
    huge = TensorInfo("lm_head.weight", GGMLType.F16, (rows, 4096), 0, rows * 4096 * 2, empty)
    with pytest.raises(
        BackendError,
        match=r"model\.bin: numpy-blas needs .* GiB for float32 weights "
        r"\(plus .* GiB to run\) but only .* available",
    ):
        create_backend("numpy-blas").prepare("model.bin", {"lm_head.weight": huge})


def test_available_memory_reads_memavailable(tmp_path):
    from ggml_py_backends.numpy_blas import available_memory

    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       16000000 kB\nMemAvailable:    1234567 kB\n")
    assert available_memory(str(meminfo)) == 1234567 * 1024
    meminfo.write_text("MemTotal:       16000000 kB\n")
    assert available_memory(str(meminfo)) is None


def test_numpy_blas_runs_at_most_one_blas_thread_per_cpu_the_process_may_use(monkeypatch):
    import ggml_py_backends.numpy_blas as numpy_blas

    blas_thread_counts = []
    monkeypatch.setattr(numpy_blas, "set_blas_threads", blas_thread_counts.append)
    x, weight = np.ones((1, 3), np.float32), np.ones((2, 3), np.float32)
    # the CPUs this process may run on, where the OS says (Linux)...
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    for requested in (8, 3, 2, 1, None):
        numpy_blas.NumpyBlasBackend(n_threads=requested).linear(x, weight)
    assert blas_thread_counts == [2, 2, 2, 1, 2]
    # ...else the machine's CPUs
    monkeypatch.delattr(os, "sched_getaffinity")
    monkeypatch.setattr(os, "cpu_count", lambda: 3)
    blas_thread_counts.clear()
    for requested in (8, 3, 2, None):
        numpy_blas.NumpyBlasBackend(n_threads=requested).linear(x, weight)
    assert blas_thread_counts == [3, 3, 2, 3]


def test_blocked_f16_keeps_weights_in_the_file_bytes():
    from ggml_py_backends.blocked_f16 import BlockedMatrix

    raw = np.arange(4 * 64, dtype=np.float16).view(np.uint8)
    record = TensorInfo("w", GGMLType.F16, (4, 64), 0, raw.size, raw)
    handle = create_backend("blocked-f16").prepare("m.bin", {"w": record})["w"]
    assert isinstance(handle, BlockedMatrix) and np.shares_memory(handle.rows, raw)


def test_fast_f16_decoding_is_exact_for_every_half():
    from ggml_py.formats.quant import F16_SCALE_EXPONENT, GGMLType, decode_f16_scaled, dequantize

    halves = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16)
    finite = halves[np.isfinite(halves)]
    decoded = decode_f16_scaled(finite, np.empty(finite.size, np.int32)) * np.float32(
        2.0**F16_SCALE_EXPONENT
    )
    expected = finite.astype(np.float32)  # NumPy's own cast
    assert np.array_equal(decoded.view(np.uint32), expected.view(np.uint32))  # signed zeros too
    # dequantize (the load-time path) takes NumPy's cast for chunks holding infinities or NaN,
    # and reads unaligned bytes: every bit pattern, NaN payloads included
    raw = np.zeros(2 * halves.size + 1, np.uint8)
    raw[1:] = halves.view(np.uint8)
    exact = dequantize(raw[1:], GGMLType.F16, halves.shape)
    assert np.array_equal(exact.view(np.uint32), halves.astype(np.float32).view(np.uint32))


def test_conformance_suite_rejects_an_unknown_backend(tmp_path):
    result = _run(
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "--pyargs",
        "ggml_py.conformance",
        "--ggml-py-backend",
        "no-such-backend",
        cwd=tmp_path,
    )
    assert result.returncode == 4  # pytest's usage error
    assert "no such ggml-py backend" in result.stderr


def test_out_of_tree_example_backend_installs_with_pip_and_passes_the_suite(tmp_path):
    source = tmp_path / "custom_backend"
    shutil.copytree(REPO / "examples" / "custom_backend", source)  # builds write into the source
    site = tmp_path / "site"
    install = _run(
        "-m",
        "pip",
        "install",
        "--quiet",
        "--no-deps",
        "--no-build-isolation",
        "--no-index",
        "--target",
        str(site),
        str(source),
        cwd=tmp_path,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    env = {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}

    listing = _run("-m", "ggml_py", "backends", cwd=tmp_path, env=env)
    assert listing.returncode == 0
    assert (
        "example-float64  ggml_py_example_backend:Float64Backend [ggml-py-example-backend 0.1.0]"
        in listing.stdout
    )

    suite = _run(
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "--pyargs",
        "ggml_py.conformance",
        "--ggml-py-backend",
        "example-float64",
        cwd=tmp_path,
        env=env,
        timeout=1200,  # under a minute on a quiet machine
    )
    assert suite.returncode == 0, suite.stdout[-3000:] + suite.stderr[-3000:]
    assert " passed" in suite.stdout and "failed" not in suite.stdout
    assert "skipped" not in suite.stdout  # the suite's golden data came with ggml-py

    model_path = tmp_path / "bytes.bin"
    write_model_file(model_path, byte_model_file(n_ctx=32))
    example = _run(
        str(REPO / "examples" / "use_custom_backend.py"), str(model_path), cwd=tmp_path, env=env
    )
    assert example.returncode == 0, example.stderr[-3000:]
    assert "example-float64  ggml_py_example_backend:Float64Backend" in example.stdout


def test_backends_command_lists_names_origins_and_the_default():
    result = _run("-m", "ggml_py", "backends", cwd=REPO, env={"GGML_PY_BACKEND": "blocked-f16"})
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert any(
        line.startswith(
            "* blocked-f16  ggml_py_backends.blocked_f16:BlockedF16Backend [ggml-py-gptj "
        )
        for line in lines
    )
    assert any(
        line.startswith(
            "  numpy-blas   ggml_py_backends.numpy_blas:NumpyBlasBackend [ggml-py-gptj "
        )
        for line in lines
    )
    assert "float32 in RAM" in result.stdout


def test_backends_command_fails_when_the_environment_names_a_missing_backend():
    result = _run("-m", "ggml_py", "backends", cwd=REPO, env={"GGML_PY_BACKEND": "no-such-backend"})
    assert result.returncode == 1
    assert "numpy-blas" in result.stdout  # the listing still helps
    assert result.stderr.strip().splitlines() == [
        "ggml-py: error: $GGML_PY_BACKEND names 'no-such-backend', which is not installed; "
        "`run` will refuse it until it is"
    ]


# --- auto ------------------------------------------------------------------------------------


@needs_numba
def test_auto_takes_numba_when_it_works(peer):
    model = ggml_py.load(peer / "tiny-gptj" / "ggml-model-q8_0.bin")
    assert model.backend.name == "auto" and model.backend.chosen.name == "numba"
    assert model.backend.reason == "its compiled kernels work here"
    listing = _run("-m", "ggml_py", "backends", cwd=REPO)
    assert "auto picks here: numba (its compiled kernels work here)" in listing.stdout
    run = _run(
        "-m",
        "ggml_py",
        "run",
        "-m",
        str(peer / "tiny-gptj" / "ggml-model-q8_0.bin"),
        "-p",
        "Hi",
        "-n",
        "2",
        "-t",
        "2",
        cwd=REPO,
    )
    assert run.returncode == 0, run.stderr
    assert "main: backend = numba (auto: its compiled kernels work here), 2 threads\n" in run.stderr


def test_auto_without_numba_takes_numpy_blas_if_it_fits_else_blocked_f16(monkeypatch):
    import ggml_py_backends.auto
    import ggml_py_backends.numpy_blas

    monkeypatch.setattr(
        ggml_py_backends.auto, "working_numba", lambda n_threads=None: (None, "no numba")
    )
    rows = 1024
    empty = np.zeros(0, dtype=np.uint8)  # nothing is decoded before the choice
    tensors = {"w": TensorInfo("w", GGMLType.F16, (rows, 4096), 0, rows * 4096 * 2, empty)}
    monkeypatch.setattr(ggml_py_backends.numpy_blas, "available_memory", lambda: 8 * 2**30)
    backend, reason = ggml_py_backends.auto.choose(tensors, 2)
    assert backend.name == "numpy-blas"
    assert reason == "no numba; 1.0 GiB of float32 weights and reserve fit in 8.0 GiB"
    monkeypatch.setattr(ggml_py_backends.numpy_blas, "available_memory", lambda: 2**30)
    backend, reason = ggml_py_backends.auto.choose(tensors, 2)
    assert backend.name == "blocked-f16"
    assert reason == "no numba; 1.0 GiB of float32 weights and reserve > 1.0 GiB available"
