"""``ggml-py quantize``: byte-identical with ggml's gpt-j-quantize (sha256 in expected.json)."""

from __future__ import annotations

import hashlib
import os
import shutil
from itertools import pairwise

import pytest

from ggml_py.cli import main
from ggml_py.convert import quantize_file
from ggml_py.formats import open_model
from ggml_py.formats.quant import GGMLFileType, GGMLType

QUANT_NAMES = ["q4_0", "q4_1", "q5_0", "q5_1", "q8_0"]


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("name", QUANT_NAMES)
def test_quantize_f16_file_matches_ggml(peer, expected, tmp_path, name):
    out = tmp_path / f"{name}.bin"
    assert main(["quantize", str(peer / "tiny-gptj" / "ggml-model-f16.bin"), str(out), name]) == 0
    golden = expected["ggml_files"][f"ggml-model-{name}.bin"]
    assert out.stat().st_size == golden["size"]
    assert sha256(out) == golden["sha256"]


@pytest.mark.parametrize(
    "name, number", [("q4_0", "2"), ("q4_1", "3"), ("q5_0", "8"), ("q5_1", "9"), ("q8_0", "7")]
)
def test_type_by_ggml_ftype_number_and_f32_input(peer, expected, tmp_path, name, number):
    # gpt-j-quantize takes ggml_ftype numbers too; the f32 file holds the same (f16-exact) values
    out = tmp_path / "out.bin"
    assert (
        main(
            [
                "quantize",
                "--quiet",
                str(peer / "tiny-gptj" / "ggml-model-f32.bin"),
                str(out),
                number,
            ]
        )
        == 0
    )
    assert sha256(out) == expected["ggml_files"][f"ggml-model-{name}.bin"]["sha256"]


@pytest.mark.parametrize("bad", ["f16", "1", "0", "4", "q4_2", "q4_k"])
def test_unknown_or_unquantized_type_is_a_usage_error(peer, tmp_path, bad, capsys):
    out = tmp_path / "out.bin"
    with pytest.raises(SystemExit) as caught:
        main(["quantize", str(peer / "tiny-gptj" / "ggml-model-f16.bin"), str(out), bad])
    assert caught.value.code == 2
    assert (
        "choose one of q4_0 (2), q4_1 (3), q5_0 (8), q5_1 (9), q8_0 (7)" in capsys.readouterr().err
    )
    assert not out.exists()  # unlike gpt-j-quantize, no partial file


def test_already_quantized_input_is_refused(peer, tmp_path, capsys):
    out = tmp_path / "out.bin"
    assert (
        main(["quantize", str(peer / "tiny-gptj" / "ggml-model-q4_0.bin"), str(out), "q8_0"]) == 1
    )
    err = capsys.readouterr().err
    assert (
        err.startswith("ggml-py: error: ")
        and "'transformer.wte.weight' is q4_0; quantize needs f32 or f16 input" in err
    )
    assert not list(tmp_path.iterdir())


def test_interrupted_quantize_leaves_nothing(peer, tmp_path):
    out = tmp_path / "out.bin"
    out.write_bytes(b"previous contents")

    def interrupt(name, done, total):
        if name.startswith("transformer.h.1"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        quantize_file(
            peer / "tiny-gptj" / "ggml-model-f16.bin", out, GGMLFileType.MOSTLY_Q4_0, interrupt
        )
    assert out.read_bytes() == b"previous contents"
    assert os.listdir(tmp_path) == ["out.bin"]


def test_progress_reports_every_tensor_up_to_the_total(peer, tmp_path):
    seen = []
    quantize_file(
        peer / "tiny-gptj" / "ggml-model-f16.bin",
        tmp_path / "q.bin",
        GGMLFileType.MOSTLY_Q8_0,
        lambda name, done, total: seen.append((name, done, total)),
    )
    model = open_model(tmp_path / "q.bin")
    assert list(dict.fromkeys(name for name, *_ in seen)) == list(model.tensors)  # in file order
    assert seen[-1][1] == seen[-1][2] == sum(info.nbytes for info in model.tensors.values())
    assert all(a[1] <= b[1] for a, b in pairwise(seen))


def test_selection_and_header(peer, tmp_path):
    # a copy whose output path equals its input path: the result replaces the input atomically
    work = tmp_path / "model.bin"
    shutil.copy(peer / "tiny-gptj" / "ggml-model-f16.bin", work)
    quantize_file(work, work, GGMLFileType.MOSTLY_Q5_1)
    model = open_model(work)
    assert model.hparams.ftype is GGMLFileType.MOSTLY_Q5_1 and model.quantization_version == 2
    for info in model.tensors.values():
        quantized = info.name.endswith("weight") and len(info.shape) == 2
        assert info.type is (GGMLType.Q5_1 if quantized else GGMLType.F32)
