"""``ggml-py info`` on ggml's own files."""

from __future__ import annotations

import pytest

from ggml_py.cli import main


def test_info_q4_0(peer, capsys):
    assert main(["info", str(peer / "tiny-gptj" / "ggml-model-q4_0.bin")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "format:  ggml" in lines
    for field, value in [
        ("n_vocab", 50400),
        ("n_ctx", 256),
        ("n_embd", 64),
        ("n_head", 4),
        ("n_layer", 2),
        ("n_rot", 8),
    ]:
        assert f"{field:<8} {value}" in lines
    assert "ftype    2 (q4_0), stored as 2002, quantization version 2" in lines
    assert "vocabulary: 50400 tokens" in lines
    table = {
        line.split()[0]: line.split()[1:]
        for line in lines
        if line.startswith(("transformer.", "lm_head."))
    }
    assert len(table) == 25
    assert table["transformer.wte.weight"] == ["q4_0", "[50400,", "64]", str(50400 * 2 * 18)]
    assert table["lm_head.bias"] == ["f32", "[50400]", str(50400 * 4)]


def test_info_f16_ftype(peer, capsys):
    assert main(["info", str(peer / "tiny-gptj" / "ggml-model-f16.bin")]) == 0
    assert "ftype    1 (f16), stored as 1, quantization version 0" in capsys.readouterr().out


def test_info_on_a_damaged_file(tmp_path, capsys):
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"lmgg" + bytes(10))
    assert main(["info", str(bad)]) == 1
    assert (
        capsys.readouterr().err
        == f"ggml-py: error: {bad}: header needs 32 bytes, the file has 14 (at byte 0)\n"
    )


def test_info_missing_file_is_a_usage_error(tmp_path):
    with pytest.raises(SystemExit) as caught:
        main(["info", str(tmp_path / "nope.bin")])
    assert caught.value.code == 2
