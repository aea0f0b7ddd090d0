"""``ggml-py convert``: Hugging Face folder -> ggml GPT-J file.

Golden data: ggml's converter and quantizer outputs for the shipped tiny model (sha256 in
../shared/peer/tiny-gptj/expected.json) and, for other shapes and containers, the files
scripts/make_convert_fixtures.py built from what transformers loads (tests/fixtures/convert).
Quantized outputs are checked tensor by tensor against the ``gguf`` package's quantizer.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

import gguf
import numpy as np
import pytest

from ggml_py.checkpoint import open_checkpoint
from ggml_py.cli import main
from ggml_py.convert import ConversionWarning, convert_hf, default_outfile, read_vocab
from ggml_py.errors import CheckpointError, TokenizerError
from ggml_py.formats import open_model
from ggml_py.formats.gptj import tensor_names
from ggml_py.formats.quant import QUANTIZED_TYPES, GGMLFileType, GGMLType

FIXTURES = Path(__file__).parent / "fixtures" / "convert"
FIXTURE_EXPECTED = json.loads((FIXTURES / "expected.json").read_text())["folders"]
ALL_TYPES = ["f32", "f16", "q4_0", "q4_1", "q5_0", "q5_1", "q8_0"]


def sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def linked_copy(source: Path, target: Path, skip=()) -> Path:
    """A folder with the same files (weights symlinked, so nothing big is copied)."""
    target.mkdir()
    for item in source.iterdir():
        if item.name not in skip and not item.name.startswith("ggml-model"):
            (target / item.name).symlink_to(item.resolve())
    return target


@pytest.mark.parametrize("outtype", ALL_TYPES)
def test_tiny_model_matches_ggml(tiny_model_dir, expected, tmp_path, outtype):
    out = tmp_path / "out.bin"
    assert (
        main(
            ["convert", str(tiny_model_dir), "--outtype", outtype, "--outfile", str(out), "--quiet"]
        )
        == 0
    )
    golden = expected["ggml_files"][f"ggml-model-{outtype}.bin"]
    assert (out.stat().st_size, sha256(out)) == (golden["size"], golden["sha256"])


@pytest.mark.parametrize("folder", sorted(FIXTURE_EXPECTED))
@pytest.mark.parametrize("outtype", ["f32", "f16"])
def test_other_shapes_and_containers(tmp_path, folder, outtype):
    golden = FIXTURE_EXPECTED[folder]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = convert_hf(FIXTURES / folder, GGMLFileType.parse(outtype), tmp_path / "out.bin")
    assert (os.path.getsize(out), sha256(out)) == (
        golden[outtype]["size"],
        golden[outtype]["sha256"],
    )
    padded = golden["n_rows"] > golden["n_tokens"]
    assert [w.category for w in caught] == ([ConversionWarning] if padded else [])


def quantized_from_gguf(values: np.ndarray, ggml_type: GGMLType) -> bytes:
    return gguf.quants.quantize(
        values.astype(np.float32), gguf.GGMLQuantizationType(int(ggml_type))
    ).tobytes()


@pytest.mark.parametrize("folder", sorted(FIXTURE_EXPECTED))
def test_quantized_outputs_match_gguf(tmp_path, folder):
    """Each 2-D weight equals gguf's quantizer applied to the checkpoint's values (f16 sources:
    the f16 file's values; f32/bf16 sources: the f32 file's values); the rest is the f32 file's."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConversionWarning)
        reference = open_model(
            convert_hf(FIXTURES / folder, GGMLFileType.ALL_F32, tmp_path / "f32.bin")
        )
        types = (
            QUANTIZED_TYPES if folder == "e32-h4-l2-torch-zip" else (GGMLType.Q4_0, GGMLType.Q8_0)
        )
        for ggml_type in types:
            file_type = next(t for t in GGMLFileType if t.weight_type is ggml_type)
            model = open_model(
                convert_hf(FIXTURES / folder, file_type, tmp_path / f"{ggml_type.short_name}.bin")
            )
            assert model.hparams == reference.hparams._replace(ftype=file_type)
            assert model.vocab == reference.vocab and model.quantization_version == 2
            for name, info in model.tensors.items():
                source = reference.tensors[name]
                if len(info.shape) == 2:
                    assert info.type is ggml_type
                    values = source.data.view("<f4").reshape(source.shape)
                    assert info.data.tobytes() == quantized_from_gguf(values, ggml_type), name
                else:
                    assert (info.type, info.data.tobytes()) == (GGMLType.F32, source.data.tobytes())


def test_convert_to_q_equals_convert_f16_then_quantize(tmp_path):
    folder = FIXTURES / "e32-h4-l2-safetensors"  # an f16 checkpoint
    convert_hf(folder, GGMLFileType.MOSTLY_F16, tmp_path / "f16.bin")
    for name in ("q4_1", "q5_0"):
        main(
            [
                "quantize",
                "--quiet",
                str(tmp_path / "f16.bin"),
                str(tmp_path / f"via-f16-{name}.bin"),
                name,
            ]
        )
        convert_hf(folder, GGMLFileType.parse(name), tmp_path / f"direct-{name}.bin")
        assert sha256(tmp_path / f"direct-{name}.bin") == sha256(tmp_path / f"via-f16-{name}.bin")


def test_f32_checkpoint_quantizes_from_f32_values(tmp_path):
    folder = FIXTURES / "e32-h4-l2-f32"
    convert_hf(folder, GGMLFileType.ALL_F32, tmp_path / "f32.bin")
    convert_hf(folder, GGMLFileType.MOSTLY_F16, tmp_path / "f16.bin")
    main(["quantize", "--quiet", str(tmp_path / "f32.bin"), str(tmp_path / "via-f32.bin"), "q8_0"])
    main(["quantize", "--quiet", str(tmp_path / "f16.bin"), str(tmp_path / "via-f16.bin"), "q8_0"])
    convert_hf(folder, GGMLFileType.MOSTLY_Q8_0, tmp_path / "direct.bin")
    assert sha256(tmp_path / "direct.bin") == sha256(tmp_path / "via-f32.bin")
    assert sha256(tmp_path / "direct.bin") != sha256(tmp_path / "via-f16.bin")  # one rounding fewer


def test_default_outfile_and_cli_output(tmp_path, tiny_model_dir, expected, capsys):
    folder = linked_copy(tiny_model_dir, tmp_path / "hf")
    assert main(["convert", str(folder)]) == 0
    out = folder / "ggml-model-f16.bin"
    assert default_outfile(folder, GGMLFileType.MOSTLY_F16) == str(out)
    assert sha256(out) == expected["ggml_files"]["ggml-model-f16.bin"]["sha256"]
    assert capsys.readouterr().err == f"wrote {out}\n"  # no progress: stderr is not a terminal
    assert main(["convert", str(folder), "--outtype", "q8_0", "--quiet"]) == 0
    assert (folder / "ggml-model-q8_0.bin").exists() and capsys.readouterr().err == ""


def test_missing_added_tokens_are_padded_like_gptj(tmp_path, tiny_model_dir, expected, capsys):
    """Without added_tokens.json (ggml's converter then writes a file its loader refuses) the 143
    placeholders are GPT-J's own <|extratoken_N|>, so the file equals ggml's converted one."""
    folder = linked_copy(tiny_model_dir, tmp_path / "hf", skip={"added_tokens.json"})
    assert main(["convert", str(folder), "--quiet"]) == 0
    assert (
        sha256(folder / "ggml-model-f16.bin")
        == expected["ggml_files"]["ggml-model-f16.bin"]["sha256"]
    )
    err = capsys.readouterr().err
    assert (
        err.startswith("ggml-py: warning: ")
        and "50257 tokens for 50400 embedding rows; ids 50257..50399" in err
    )


def test_added_tokens_go_to_their_ids_in_any_order(tmp_path, tiny_model_dir, expected):
    folder = linked_copy(tiny_model_dir, tmp_path / "hf", skip={"added_tokens.json"})
    added = json.loads((tiny_model_dir / "added_tokens.json").read_text())
    shuffled = dict(sorted(added.items(), key=lambda item: hash(item[0]) % 97))
    assert list(shuffled) != list(added)
    (folder / "added_tokens.json").write_text(json.dumps(shuffled))
    convert_hf(folder, GGMLFileType.MOSTLY_F16)
    assert (
        sha256(folder / "ggml-model-f16.bin")
        == expected["ggml_files"]["ggml-model-f16.bin"]["sha256"]
    )


def write_vocab(folder: Path, base: dict, added: dict = None) -> Path:
    folder.mkdir(exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(base, ensure_ascii=False), encoding="utf-8")
    if added is not None:
        (folder / "added_tokens.json").write_text(
            json.dumps(added, ensure_ascii=False), encoding="utf-8"
        )
    return folder


def test_read_vocab_rules(tmp_path):
    folder = write_vocab(tmp_path / "a", {"a": 0, "Ġb": 2, "Ċ": 1}, {"<x>": 4, "é y": 3})
    assert read_vocab(folder, 5) == [b"a", b"\n", b" b", "é y".encode(), b"<x>"]
    with pytest.warns(ConversionWarning, match=r"ids 5..6 get placeholder"):
        assert read_vocab(folder, 7)[5:] == [b"<|extratoken_1|>", b"<|extratoken_2|>"]
    with pytest.warns(
        ConversionWarning, match=r"1 added tokens have ids beyond the model's 4 rows.*'<x>'"
    ):
        assert len(read_vocab(folder, 4)) == 4
    with pytest.raises(
        TokenizerError, match=r"vocab.json: token id 2 is beyond the model's 2 embedding rows"
    ):
        read_vocab(folder, 2)


@pytest.mark.parametrize(
    "base, added, message",
    [
        ({"a": 0, "b": 0}, None, r"vocab.json: tokens 'a' and 'b' share id 0"),
        (
            {"a": 0},
            {"b": 0},
            r"added_tokens.json: token 'b' has id 0, which vocab.json already uses",
        ),
        ({"a": -1}, None, r"token 'a' has id -1, expected a non-negative integer"),
        (
            {"a b": 0},
            None,
            r"vocab.json: token 'a b' has character ' ' outside the byte-level alphabet",
        ),
        (["a"], None, r"vocab.json: expected a JSON object, found list"),
    ],
)
def test_read_vocab_errors(tmp_path, base, added, message):
    folder = write_vocab(tmp_path / "v", base, added)
    with pytest.raises(TokenizerError, match=message):
        read_vocab(folder, 3)


def edited_copy(tmp_path: Path, source: Path, **config_changes) -> Path:
    folder = linked_copy(source, tmp_path / "edited", skip={"config.json"})
    config = json.loads((source / "config.json").read_text())
    config.update(config_changes)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"model_type": "gpt2"}, "model_type is 'gpt2', only GPT-J"),
        ({"n_inner": 100}, "n_inner 100 is not 4 \\* n_embd"),
        ({"n_head": 5}, "n_embd 32 is not a multiple of n_head 5"),
        ({"rotary_dim": 16}, "rotary_dim 16 does not fit a head of 8"),
        ({"n_layer": 3}, "tensor 'transformer.h.2.ln_1.weight' and 9 more missing"),
        (
            {"n_embd": 64, "n_head": 8},
            r"'transformer.wte.weight' has shape \[300, 32\], config.json implies \[300, 64\]",
        ),
        ({"n_positions": None}, "n_positions must be a positive integer"),
    ],
)
def test_config_and_checkpoint_mismatches(tmp_path, changes, message):
    folder = edited_copy(tmp_path, FIXTURES / "e32-h4-l2-safetensors", **changes)
    with pytest.raises(CheckpointError, match=message):
        convert_hf(folder, GGMLFileType.MOSTLY_F16)
    assert not (folder / "ggml-model-f16.bin").exists()


@pytest.mark.parametrize(
    "content, message",
    [
        (b'{"n_embd": 32,', r"config.json: not valid JSON: .* at line 1 column 15 \(at byte 14\)$"),
        (b"[" * 100_000, r"config.json: not valid JSON: nested too deeply for Python's json"),
        (b'{"n_embd": 1' + b"0" * 5000 + b"}", r"config.json: not valid JSON: a number of more"),
        (b'{"model_type": "gpt\xff"}', r"config.json: not UTF-8 text \(at byte 19\)$"),
        (b"[]", r"config.json: expected a JSON object, found list$"),
    ],
)
def test_unreadable_config_is_a_checkpoint_error(tmp_path, content, message):
    folder = linked_copy(FIXTURES / "e32-h4-l2-safetensors", tmp_path / "hf", skip={"config.json"})
    (folder / "config.json").write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        convert_hf(folder, GGMLFileType.MOSTLY_F16)


@pytest.mark.parametrize(
    "content, reason",
    [
        (b'{"a": ' + b"[" * 100_000 + b"}", "nested too deeply for Python's json module"),
        (b'{"n_embd": 1' + b"0" * 5000 + b"}", "a number of more than 4300 digits"),
    ],
)
def test_convert_of_a_hostile_config_is_one_line(tmp_path, capsys, content, reason):
    # json.loads raises RecursionError and ValueError for these, which the CLI would show as a
    # traceback if they were not turned into the file's CheckpointError
    folder = linked_copy(FIXTURES / "e32-h4-l2-safetensors", tmp_path / "hf", skip={"config.json"})
    (folder / "config.json").write_bytes(content)
    assert main(["convert", str(folder)]) == 1
    out, err = capsys.readouterr()
    assert out == "" and "Traceback" not in err
    assert err == f"ggml-py: error: {folder / 'config.json'}: not valid JSON: {reason}\n"
    assert not list(folder.glob("ggml-model*"))


def test_null_rotary_dim_means_the_whole_head(tmp_path):
    folder = edited_copy(tmp_path, FIXTURES / "e64-h2-l1-fullrot-safetensors", rotary_dim=None)
    assert open_model(convert_hf(folder, GGMLFileType.MOSTLY_F16)).hparams.n_rot == 32


def test_epsilon_that_cannot_be_stored_warns(tmp_path):
    folder = edited_copy(tmp_path, FIXTURES / "e32-h4-l2-safetensors", layer_norm_epsilon=1e-6)
    with pytest.warns(ConversionWarning, match="layer_norm_epsilon 1e-06 cannot be stored"):
        convert_hf(folder, GGMLFileType.MOSTLY_F16)


def test_interrupted_convert_leaves_nothing(tmp_path):
    folder = linked_copy(FIXTURES / "e32-h4-l2-torch-zip", tmp_path / "hf")

    def interrupt(name, done, total):
        if done > total // 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        convert_hf(folder, GGMLFileType.MOSTLY_F16, progress=interrupt)
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        p.name for p in (FIXTURES / "e32-h4-l2-torch-zip").iterdir()
    )


def test_tensor_order_is_state_dict_order(tmp_path):
    names = tensor_names(2)
    assert len(names) == 25 and names[:4] == [
        "transformer.wte.weight",
        "transformer.h.0.ln_1.weight",
        "transformer.h.0.ln_1.bias",
        "transformer.h.0.attn.k_proj.weight",
    ]
    # safetensors stores its keys sorted by name; the output still follows state_dict order
    folder = FIXTURES / "e32-h4-l2-safetensors"
    assert list(open_checkpoint(folder)) != names
    assert (
        list(open_model(convert_hf(folder, GGMLFileType.MOSTLY_F16, tmp_path / "out.bin")).tensors)
        == names
    )
