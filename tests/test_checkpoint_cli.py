"""``ggml-py ls``: the table, the totals, and the exit codes."""

from __future__ import annotations

import json
import math

from conftest import REPO
from test_cli_basics import run_cli

FIXTURES = REPO / "tests" / "fixtures" / "checkpoints"


def test_ls_lists_every_tensor_with_totals(tiny_model_dir):
    result = run_cli("ls", str(tiny_model_dir))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["name", "dtype", "shape", "bytes"]
    digests = json.loads((FIXTURES / "tiny-gptj-sha256.json").read_text())
    rows = lines[1:-1]
    assert len(rows) == len(digests)
    for row, (name, expected) in zip(rows, digests.items(), strict=True):
        nbytes = math.prod(expected["shape"]) * 2
        assert row.split() == [
            name,
            expected["dtype"],
            *str(expected["shape"]).split(),
            str(nbytes),
        ]
    assert lines[-1] == "25 tensors, 6600928 parameters, 13201856 bytes (12.59 MiB)"


def test_ls_of_a_sharded_folder():
    result = run_cli("ls", str(FIXTURES / "sharded_safetensors"))
    assert result.returncode == 0
    assert result.stdout.splitlines()[-1].startswith("25 tensors, ")


def test_ls_missing_path_is_a_usage_error():
    result = run_cli("ls", "no/such/checkpoint.bin")
    assert result.returncode == 2
    assert "no/such/checkpoint.bin: no such file or folder" in result.stderr


def test_ls_bad_file_is_one_line_and_exit_1(tmp_path):
    bad = tmp_path / "pytorch_model.bin"
    bad.write_bytes(b"\x80\x02cposix\nsystem\nX\x02\x00\x00\x00idR.")
    result = run_cli("ls", str(bad))
    assert result.returncode == 1
    assert result.stdout == ""
    assert (
        result.stderr
        == f"ggml-py: error: {bad}: magic number: global 'posix.system' is not allowed "
        "(only torch tensor rebuild functions, storage types, dtypes and collections.OrderedDict are) (at byte 2)\n"
    )


def test_ls_lfs_pointer_explains_the_missing_download(tmp_path):
    (tmp_path / "model.safetensors").write_text(
        "version https://git-lfs.github.com/spec/v1\nsize 24\n"
    )
    result = run_cli("ls", str(tmp_path))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "Git LFS pointer to a 24-byte file, not the weights: run `git lfs pull`" in result.stderr
