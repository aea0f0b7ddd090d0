"""Writes never leave a half-written file at the target path (spec/robustness.md).

``convert``, ``convert --format gguf`` and ``quantize`` run as real processes and are killed
with SIGKILL at random moments of their write; afterwards the target path is either absent or
holds the complete file, and the ``.partial`` leftovers are removed by the next run. A full
disk is a file size limit (RLIMIT_FSIZE; Python ignores SIGXFSZ, so writes fail with EFBIG):
one line on stderr naming the output, exit 1, no file left at all.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import pytest
from conftest import REPO, TINY_MODEL

from ggml_py._atomic import STALE_AFTER, atomic_output
from ggml_py.convert import convert_hf
from ggml_py.formats import open_model
from ggml_py.formats.quant import GGMLFileType

fcntl = pytest.importorskip("fcntl")  # POSIX: locks, SIGKILL and file size limits
resource = pytest.importorskip("resource")

# Every output below is larger than this, so a write that has reached it is still going on.
KILL_BEFORE_BYTES = 4_000_000
N_TENSORS = 25  # examples/tiny-gptj: 2 layers


@pytest.fixture(scope="module")
def f32_model(tmp_path_factory):
    """examples/tiny-gptj as an f32 ggml file (27 MB), the input of quantize."""
    return convert_hf(
        TINY_MODEL, GGMLFileType.ALL_F32, tmp_path_factory.mktemp("input") / "f32.bin"
    )


def commands(f32_model, out):
    return {
        "convert": [
            "convert",
            str(TINY_MODEL),
            "--outtype",
            "f32",
            "--outfile",
            str(out),
            "--quiet",
        ],
        "convert-gguf": [
            "convert",
            str(TINY_MODEL),
            "--format",
            "gguf",
            "--outtype",
            "f16",
            "--outfile",
            str(out),
            "--quiet",
        ],
        "quantize": ["quantize", str(f32_model), str(out), "q8_0", "--quiet"],
    }


def start(arguments, **options) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "ggml_py", *arguments],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **options,
    )


def partials(folder, name):
    return sorted(
        path
        for path in folder.iterdir()
        if path.name.startswith(f".{name}.") and path.name.endswith(".partial")
    )


def kill_while_writing(arguments, out, threshold: int) -> bool:
    """Start the command and SIGKILL it once its temporary file holds ``threshold`` bytes (or at
    once, for threshold 0); True when it was killed before it finished."""
    process = start(arguments)
    deadline = time.monotonic() + 60
    while threshold and process.poll() is None and time.monotonic() < deadline:
        if any(
            path.stat().st_size >= threshold
            for path in partials(out.parent, out.name)
            if path.exists()
        ):
            break
        time.sleep(0.001)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    return process.returncode == -signal.SIGKILL


def assert_complete(path) -> None:
    model = open_model(path)  # checks that every tensor lies within the file
    assert len(model.tensors) == N_TENSORS
    last = max(model.tensors.values(), key=lambda info: info.offset)
    assert path.stat().st_size - (last.offset + last.nbytes) < 32  # GGUF pads the last tensor


@pytest.mark.parametrize("command", ["convert", "convert-gguf", "quantize"])
def test_sigkill_at_random_moments_leaves_nothing_at_the_target(tmp_path, f32_model, command):
    out = tmp_path / "out.bin"
    arguments = commands(f32_model, out)[command]
    seed = random.randrange(2**32)
    thresholds = [0] + [random.Random(seed + k).randrange(1, KILL_BEFORE_BYTES) for k in range(2)]
    killed_mid_write = 0
    for threshold in thresholds:
        killed = kill_while_writing(arguments, out, threshold)
        if out.exists():  # killed after the rename: then the file must be whole
            assert_complete(out)
            out.unlink()
        else:
            killed_mid_write += killed and threshold > 0
    assert killed_mid_write >= 1, f"no kill landed during the write (seed {seed})"
    leftovers = partials(tmp_path, out.name)
    assert leftovers, "a SIGKILL mid-write leaves its temporary file (documented)"
    for leftover in leftovers:  # as if the kill happened a while ago
        os.utime(leftover, (time.time() - 2 * STALE_AFTER,) * 2)
    finished = start(arguments)
    _, stderr = finished.communicate()
    assert finished.returncode == 0, stderr.decode()
    assert_complete(out)
    assert partials(tmp_path, out.name) == []
    assert sorted(path.name for path in tmp_path.iterdir()) == ["out.bin"]


def limit_file_size(limit: int):
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


@pytest.mark.parametrize("command", ["convert", "convert-gguf", "quantize"])
def test_full_disk_is_one_line_and_removes_the_temporary_file(tmp_path, f32_model, command):
    out = tmp_path / "out.bin"
    process = start(commands(f32_model, out)[command], preexec_fn=limit_file_size(1 << 20))
    stdout, stderr = process.communicate()
    assert process.returncode == 1
    assert stderr.decode() == f"ggml-py: error: {out}: cannot write the output: File too large\n"
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------- atomic_output


def test_write_errors_name_the_target_not_the_temporary_file(tmp_path):
    with pytest.raises(IsADirectoryError) as caught:
        with atomic_output(tmp_path) as f:
            f.write(b"data")
    assert caught.value.filename == str(tmp_path) and ".partial" not in str(caught.value)
    with pytest.raises(FileNotFoundError) as caught:
        with atomic_output(tmp_path / "missing" / "out.bin"):
            pass
    assert caught.value.filename == str(tmp_path / "missing" / "out.bin")
    assert list(tmp_path.iterdir()) == []


def test_errors_reading_the_input_keep_their_own_file_name(tmp_path):
    with pytest.raises(FileNotFoundError) as caught:
        with atomic_output(tmp_path / "out.bin"):
            open(tmp_path / "input.bin", "rb")
    assert caught.value.filename == str(tmp_path / "input.bin")
    assert list(tmp_path.iterdir()) == []


def leftover(folder, name: str, age: float):
    path = folder / name
    path.write_bytes(b"half")
    os.utime(path, (time.time() - age,) * 2)
    return path


def test_only_stale_unlocked_leftovers_of_the_same_target_are_removed(tmp_path):
    stale = leftover(tmp_path, ".out.bin.abcd1234.partial", 2 * STALE_AFTER)
    fresh = leftover(
        tmp_path, ".out.bin.fresh123.partial", 0
    )  # its writer may not have locked it yet
    other_target = leftover(tmp_path, ".out.bin2.abcd1234.partial", 2 * STALE_AFTER)
    not_ours = leftover(tmp_path, ".out.bin.partial", 2 * STALE_AFTER)
    locked = leftover(tmp_path, ".out.bin.locked12.partial", 2 * STALE_AFTER)
    with open(locked, "rb") as writer:  # a live writer holds its lock
        fcntl.flock(writer.fileno(), fcntl.LOCK_EX)
        with atomic_output(tmp_path / "out.bin") as f:
            f.write(b"complete")
    assert not stale.exists()
    assert fresh.exists() and other_target.exists() and not_ours.exists() and locked.exists()
    assert (tmp_path / "out.bin").read_bytes() == b"complete"


def test_a_writer_holds_its_lock_until_the_file_is_complete(tmp_path):
    with atomic_output(tmp_path / "out.bin") as f:
        f.write(b"partial")
        (temporary,) = partials(tmp_path, "out.bin")
        with open(temporary, "rb") as other:
            with pytest.raises(BlockingIOError):
                fcntl.flock(other.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    assert partials(tmp_path, "out.bin") == []
