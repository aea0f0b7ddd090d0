"""GPT-J as GGUF: conversion from ggml's legacy files and from the Hugging Face folder, reading
back through ``open_model``, and running.

Golden data: the legacy files ggml's converter and quantizer wrote for the shared tiny GPT-J
(../shared/peer/tiny-gptj, ``peer`` fixture), GPT-2's vocab.json/merges.txt, and the prompt ids
Hugging Face's tokenizer produced (expected.json). The ``gguf`` package's reader checks every
file's metadata and tensors; the expected key set, value types and values come from llama.cpp's
conventions (see ../shared/reference/gguf-gptj.md), not from our writer.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import gguf as gguf_py
import numpy as np
import pytest
from test_gguf import vocab_json_tokens

import ggml_py
from ggml_py.cli import main
from ggml_py.convert import convert_hf, convert_to_gguf
from ggml_py.errors import ModelFileError, TokenizerError
from ggml_py.formats import GptjHparams, open_model
from ggml_py.formats.gguf import GGUFField, GGUFReader, GGUFValueType, write_gguf
from ggml_py.formats.gptj_gguf import gptj_fields
from ggml_py.formats.model_file import OutputTensor
from ggml_py.formats.quant import GGMLFileType, GGMLType
from ggml_py.sampling import Sampler, SamplingSettings

KINDS = ["f32", "f16", "q4_0", "q4_1", "q5_0", "q5_1", "q8_0"]
# llama.cpp's general.file_type for each type (gguf-gptj.md section 5, quantization.md 5.1)
FILE_TYPE = {"f32": 0, "f16": 1, "q4_0": 2, "q4_1": 3, "q5_0": 8, "q5_1": 9, "q8_0": 7}
V = GGUFValueType


def legacy_path(peer: Path, kind: str) -> Path:
    return peer / "tiny-gptj" / f"ggml-model-{kind}.bin"


@pytest.fixture(scope="module")
def from_legacy(peer, tiny_model_dir, tmp_path_factory):
    """kind -> GGUF file converted from ggml's legacy file, with GPT-2's merges.txt (the CLI
    tests below show that deriving the merges gives the same bytes)."""
    folder = tmp_path_factory.mktemp("from-legacy")
    converted = {}
    for kind in KINDS:
        converted[kind] = folder / f"{kind}.gguf"
        convert_to_gguf(legacy_path(peer, kind), converted[kind], vocab_dir=tiny_model_dir)
    return converted


@pytest.fixture(scope="module")
def gpt2_tokens(tiny_model_dir):
    """GPT-J's token strings by id and GPT-2's merges.txt lines."""
    merges = (tiny_model_dir / "merges.txt").read_text(encoding="utf-8").split("\n")[1:-1]
    return vocab_json_tokens(tiny_model_dir), merges


def expected_fields(expected: dict, kind: str, gpt2_tokens) -> dict:
    """key -> (value types as gguf-py lists them, value) for the shared tiny GPT-J."""
    config = expected["model"]["config"]
    tokens, merges = gpt2_tokens
    fields = {
        "general.architecture": (["STRING"], "gptj"),
        "general.file_type": (["UINT32"], FILE_TYPE[kind]),
        "general.alignment": (["UINT32"], 32),
        "gptj.context_length": (["UINT32"], config["n_positions"]),
        "gptj.embedding_length": (["UINT32"], config["n_embd"]),
        "gptj.block_count": (["UINT32"], config["n_layer"]),
        "gptj.feed_forward_length": (["UINT32"], 4 * config["n_embd"]),
        "gptj.attention.head_count": (["UINT32"], config["n_head"]),
        "gptj.attention.layer_norm_epsilon": (
            ["FLOAT32"],
            pytest.approx(config["layer_norm_epsilon"]),
        ),
        "gptj.rope.dimension_count": (["UINT32"], config["rotary_dim"]),
        "gptj.rope.freq_base": (["FLOAT32"], 10000.0),
        "gptj.vocab_size": (["UINT32"], config["vocab_size"]),
        "tokenizer.ggml.model": (["STRING"], "gpt2"),
        "tokenizer.ggml.pre": (["STRING"], "gpt-2"),
        "tokenizer.ggml.tokens": (["ARRAY", "STRING"], tokens),
        "tokenizer.ggml.token_type": (["ARRAY", "INT32"], [1] * 50256 + [3] * 144),
        "tokenizer.ggml.merges": (["ARRAY", "STRING"], merges),
        "tokenizer.ggml.bos_token_id": (["UINT32"], config["bos_token_id"]),
        "tokenizer.ggml.eos_token_id": (["UINT32"], config["eos_token_id"]),
        "tokenizer.ggml.unknown_token_id": (["UINT32"], 50256),
        "tokenizer.ggml.add_bos_token": (["BOOL"], False),
    }
    if kind not in ("f32", "f16"):
        fields["general.quantization_version"] = (["UINT32"], 2)
    return fields


def metadata(reader: gguf_py.GGUFReader) -> dict:
    return {
        key: ([t.name for t in field.types], field.contents())
        for key, field in reader.fields.items()
        if not key.startswith("GGUF.")
    }


def our_metadata(reader: GGUFReader) -> dict:
    """``metadata`` through our reader, which is fast (gguf-py takes seconds per 100k strings)."""
    return {
        key: (
            [field.type.name]
            + ([field.element_type.name] if field.element_type is not None else []),
            field.value.tolist() if isinstance(field.value, np.ndarray) else field.value,
        )
        for key, field in reader.fields.items()
    }


# gguf-py's reader takes several seconds for the 100,000 vocabulary and merge strings, so it
# checks one file in full; every file is checked against the same expectations with our reader.
def test_gguf_py_reads_a_converted_legacy_file(peer, expected, from_legacy, gpt2_tokens):
    kind = "q4_0"
    reader = gguf_py.GGUFReader(from_legacy[kind])
    assert reader.fields["GGUF.version"].contents() == 3
    assert metadata(reader) == expected_fields(expected, kind, gpt2_tokens)
    assert_tensors_repacked(reader, open_model(legacy_path(peer, kind)), kind, from_legacy[kind])


@pytest.mark.parametrize("kind", KINDS)
def test_each_converted_legacy_file(peer, expected, from_legacy, gpt2_tokens, kind):
    reader = GGUFReader(from_legacy[kind])
    assert reader.version == 3
    assert our_metadata(reader) == expected_fields(expected, kind, gpt2_tokens)
    assert_tensors_repacked(
        reader_as_gguf_py(reader), open_model(legacy_path(peer, kind)), kind, from_legacy[kind]
    )


def reader_as_gguf_py(reader: GGUFReader):
    """Our reader's tensors in the shape ``assert_tensors_repacked`` expects from gguf-py."""
    from types import SimpleNamespace

    tensors = [
        SimpleNamespace(
            name=name,
            shape=np.array(info.shape[::-1]),
            tensor_type=int(info.type),
            data=info.data,
            data_offset=info.offset,
            n_bytes=info.nbytes,
        )
        for name, info in reader.tensors.items()
    ]
    return SimpleNamespace(tensors=tensors, data_offset=reader.data_offset)


def assert_tensors_repacked(reader, legacy, kind: str, path: Path) -> None:
    name_map = gguf_py.get_tensor_name_map(gguf_py.MODEL_ARCH.GPTJ, 2)
    assert [t.name for t in reader.tensors] == [
        name_map.get_name(name, try_suffixes=(".weight", ".bias")) for name in legacy.tensors
    ]
    running = 0
    for theirs, info in zip(reader.tensors, legacy.tensors.values(), strict=True):
        assert list(theirs.shape) == list(reversed(info.shape))
        assert int(theirs.tensor_type) == int(info.type)
        expected_type = (
            GGMLFileType(FILE_TYPE[kind]).weight_type if len(info.shape) == 2 else GGMLType.F32
        )
        assert info.type is expected_type
        assert theirs.data.tobytes() == info.data.tobytes()  # repacked, not requantized
        assert theirs.data_offset == reader.data_offset + running
        running += -(-theirs.n_bytes // 32) * 32
    assert path.stat().st_size == reader.data_offset + running


@pytest.mark.parametrize("kind", KINDS)
def test_open_model_reads_gguf_like_its_legacy_source(peer, from_legacy, kind):
    legacy = open_model(legacy_path(peer, kind))
    model = open_model(from_legacy[kind])
    assert model.format == "gguf" and model.path == str(from_legacy[kind])
    assert model.hparams == legacy.hparams
    assert model.layer_norm_eps == legacy.layer_norm_eps == 1e-5
    assert model.quantization_version == legacy.quantization_version
    assert model.vocab == legacy.vocab
    assert list(model.tensors) == list(legacy.tensors)
    for name, info in model.tensors.items():
        assert (info.name, info.type, info.shape, info.nbytes) == (
            name,
            legacy.tensors[name].type,
            legacy.tensors[name].shape,
            legacy.tensors[name].nbytes,
        )
        assert (
            np.array_equal(info.data, legacy.tensors[name].data) and not info.data.flags.writeable
        )


def test_merges_read_back_as_gpt2_merges(from_legacy, gpt2_tokens):
    from ggml_py.tokenizer import token_to_bytes

    merges = open_model(from_legacy["q8_0"]).merges
    assert merges == [
        tuple(token_to_bytes(part) for part in line.split(" ")) for line in gpt2_tokens[1]
    ]


@pytest.mark.parametrize("kind", ["f32", "f16", "q4_1", "q8_0"])
def test_hf_to_gguf_equals_ggml_conversion_to_gguf(tmp_path, tiny_model_dir, from_legacy, kind):
    """HF folder -> GGUF holds exactly the tensors of ggml's own legacy file of that type
    (converted to GGUF), and the same metadata apart from the model name."""
    direct = convert_hf(
        tiny_model_dir, GGMLFileType(FILE_TYPE[kind]), tmp_path / "direct.gguf", file_format="gguf"
    )
    ours, via_ggml = GGUFReader(direct), GGUFReader(from_legacy[kind])
    assert ours.fields["general.name"].value == "tiny-gptj"
    assert {k: v for k, v in our_metadata(ours).items() if k != "general.name"} == our_metadata(
        via_ggml
    )
    assert [
        (t.name, t.type, t.shape, t.offset - ours.data_offset) for t in ours.tensors.values()
    ] == [
        (t.name, t.type, t.shape, t.offset - via_ggml.data_offset)
        for t in via_ggml.tensors.values()
    ]
    for mine, theirs in zip(ours.tensors.values(), via_ggml.tensors.values(), strict=True):
        assert np.array_equal(mine.data, theirs.data), mine.name


def test_hf_to_gguf_equals_hf_to_legacy_to_gguf(tmp_path, tiny_model_dir):
    file_type = GGMLFileType.MOSTLY_Q5_1
    direct = open_model(
        convert_hf(tiny_model_dir, file_type, tmp_path / "direct.gguf", file_format="gguf")
    )
    legacy = convert_hf(tiny_model_dir, file_type, tmp_path / "legacy.bin")
    convert_to_gguf(legacy, tmp_path / "via.gguf")
    via = open_model(tmp_path / "via.gguf")
    assert (direct.hparams, direct.vocab, direct.merges, direct.layer_norm_eps) == (
        via.hparams,
        via.vocab,
        via.merges,
        via.layer_norm_eps,
    )
    assert [(i.name, i.type, i.shape, i.data.tobytes()) for i in direct.tensors.values()] == [
        (i.name, i.type, i.shape, i.data.tobytes()) for i in via.tensors.values()
    ]


@pytest.mark.parametrize("kind", KINDS)
def test_gguf_runs_exactly_like_its_legacy_source(peer, expected, from_legacy, kind):
    legacy, converted = ggml_py.load(legacy_path(peer, kind)), ggml_py.load(from_legacy[kind])
    prompt = expected["prompts"][0]
    ids = prompt["hf_prompt_ids"] + prompt["hf_greedy_ids"]
    assert np.array_equal(converted.eval(ids, 0), legacy.eval(ids, 0))
    greedy = SamplingSettings(top_k=1)
    prompt = expected["prompts"][1 + KINDS.index(kind) % 3]
    assert converted.tokenizer.encode(prompt["text"]) == prompt["hf_prompt_ids"]
    decoded = list(converted.generate_ids(prompt["hf_prompt_ids"], 24, Sampler(greedy, seed=1)))
    assert decoded == list(
        legacy.generate_ids(prompt["hf_prompt_ids"], 24, Sampler(greedy, seed=1))
    )
    assert len(decoded) == 24


# ---------------------------------------------------------------------------------------------
# Command line


def test_cli_converts_a_legacy_file_next_to_it(peer, tmp_path, from_legacy):
    link = tmp_path / "ggml-model-q4_1.bin"
    link.symlink_to(legacy_path(peer, "q4_1"))
    assert main(["convert", str(link), "--format", "gguf", "--quiet"]) == 0
    assert (tmp_path / "ggml-model-q4_1.gguf").read_bytes() == from_legacy["q4_1"].read_bytes()


def test_cli_vocab_dir_merges_equal_derived_merges(peer, tmp_path, tiny_model_dir, from_legacy):
    out = tmp_path / "v.gguf"
    assert (
        main(
            [
                "convert",
                str(legacy_path(peer, "f16")),
                "--format",
                "gguf",
                "--vocab-dir",
                str(tiny_model_dir),
                "--outfile",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    assert out.read_bytes() == from_legacy["f16"].read_bytes()


def test_vocab_dir_merges_must_fit_the_vocabulary(peer, tmp_path):
    (tmp_path / "merges.txt").write_text("#version: 0.2\nĠ t\nq z\n", encoding="utf-8")
    with pytest.raises(
        TokenizerError,
        match=r"merges.txt: merge 1 forms b'qz', which is not in the model's vocabulary",
    ):
        convert_to_gguf(legacy_path(peer, "q8_0"), tmp_path / "out.gguf", vocab_dir=tmp_path)
    with pytest.raises(TokenizerError, match="no merges.txt"):
        convert_to_gguf(
            legacy_path(peer, "q8_0"), tmp_path / "out.gguf", vocab_dir=tmp_path / "missing"
        )
    assert not (tmp_path / "out.gguf").exists()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--format", "ggml"], "can only be converted to GGUF"),
        (["--format", "gguf", "--outtype", "q4_0"], "--outtype is for folders"),
        (["--format", "gguf", "--outfile", "{source}"], "would destroy the input"),
    ],
)
def test_cli_refuses_impossible_model_file_conversions(peer, extra, message, capsys):
    source = legacy_path(peer, "q8_0")
    with pytest.raises(SystemExit) as exit_info:  # usage errors: exit 2, before any output
        main(["convert", str(source), *[arg.format(source=source) for arg in extra]])
    out, err = capsys.readouterr()
    assert exit_info.value.code == 2 and out == ""
    assert err.splitlines()[-1].startswith(f"ggml-py convert: error: {source}: ")
    assert message in err


def test_cli_converts_the_hf_folder_to_gguf(tmp_path, tiny_model_dir):
    folder = tmp_path / "hf"
    folder.mkdir()
    for item in tiny_model_dir.iterdir():
        (folder / item.name).symlink_to(item)
    assert main(["convert", str(folder), "--format", "gguf", "--quiet"]) == 0
    model = open_model(folder / "ggml-model-f16.gguf")
    assert model.format == "gguf" and model.hparams.ftype is GGMLFileType.MOSTLY_F16
    with pytest.raises(SystemExit) as exit_info:
        main(["convert", str(folder), "--format", "gguf", "--vocab-dir", str(folder), "--quiet"])
    assert exit_info.value.code == 2


def test_hf_folder_without_merges_txt_derives_them(tmp_path, tiny_model_dir, gpt2_tokens):
    from ggml_py.convert import ConversionWarning
    from ggml_py.tokenizer import token_to_bytes

    folder = tmp_path / "hf"
    folder.mkdir()
    for item in tiny_model_dir.iterdir():
        if item.name != "merges.txt":
            (folder / item.name).symlink_to(item)
    with pytest.warns(ConversionWarning, match="no merges.txt, the merges are derived"):
        derived = convert_hf(
            folder, GGMLFileType.MOSTLY_F16, tmp_path / "d.gguf", file_format="gguf"
        )
    assert open_model(derived).merges == [
        tuple(token_to_bytes(part) for part in line.split(" ")) for line in gpt2_tokens[1]
    ]


def test_gguf_keeps_an_epsilon_the_legacy_format_cannot(tmp_path, tiny_model_dir):
    folder = tmp_path / "hf"
    folder.mkdir()
    for item in tiny_model_dir.iterdir():
        if item.name != "config.json":
            (folder / item.name).symlink_to(item)
    config = json.loads((tiny_model_dir / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "layer_norm_epsilon": 1e-6}))
    model = open_model(
        convert_hf(folder, GGMLFileType.MOSTLY_F16, tmp_path / "e.gguf", file_format="gguf")
    )
    assert model.layer_norm_eps == 1e-6


def test_interrupted_gguf_conversion_leaves_nothing(peer, tmp_path):
    def interrupt(name, done, total):
        if done > total // 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        convert_to_gguf(legacy_path(peer, "q4_0"), tmp_path / "out.gguf", progress=interrupt)
    assert list(tmp_path.iterdir()) == []


def test_cli_info_tokenize_and_run_accept_gguf(peer, expected, from_legacy, capfd):
    assert main(["info", str(from_legacy["q5_0"])]) == 0
    out = capfd.readouterr().out
    assert "format:  gguf" in out and "transformer.h.1.mlp.fc_out.weight" in out
    prompt = expected["prompts"][3]
    assert main(["tokenize", str(from_legacy["q5_0"]), "-p", prompt["text"]]) == 0
    assert [int(i) for i in capfd.readouterr().out.split()] == prompt["hf_prompt_ids"]
    flags = ["-p", "Hello, my name is", "-n", "8", "--top_k", "1", "-s", "1", "-t", "1"]
    assert main(["run", "-m", str(from_legacy["q5_0"]), *flags]) == 0
    from_gguf = capfd.readouterr().out
    assert main(["run", "-m", str(legacy_path(peer, "q5_0")), *flags]) == 0
    assert capfd.readouterr().out == from_gguf and from_gguf.startswith("Hello, my name is")


# ---------------------------------------------------------------------------------------------
# GGUF files that are valid GGUF but not a GPT-J we can run

BYTE_VOCAB = [bytes([b]) for b in range(256)] + [b"ab", b"<|endoftext|>"]


def tiny_gptj_file(path: Path, replace=None, drop=(), add=(), tensors=None) -> Path:
    """A minimal GPT-J GGUF (n_embd 4, 1 layer, two tensors) with metadata edits."""
    hparams = GptjHparams(len(BYTE_VOCAB), 16, 4, 2, 1, 2, GGMLFileType.ALL_F32)
    fields = gptj_fields(
        hparams,
        layer_norm_eps=1e-5,
        n_inner=16,
        vocab=BYTE_VOCAB,
        merges=[(b"a", b"b")],
        quantized=False,
    )
    replace = replace or {}
    fields = [replace.get(f.key, f) for f in fields if f.key not in drop] + list(add)
    names = tensors or ["token_embd.weight", "output_norm.weight"]
    shapes = {"token_embd.weight": (len(BYTE_VOCAB), 4)}
    records = [
        OutputTensor(
            n, GGMLType.F32, shapes.get(n, (4,)), [np.zeros(shapes.get(n, (4,)), np.float32)]
        )
        for n in names
    ]
    with open(path, "wb") as out:
        write_gguf(out, fields, records, path=path)
    return path


def test_minimal_defaults(tmp_path):
    model = open_model(
        tiny_gptj_file(
            tmp_path / "m.gguf",
            drop={
                "general.file_type",
                "gptj.rope.dimension_count",
                "gptj.vocab_size",
                "tokenizer.ggml.token_type",
            },
        )
    )
    assert model.hparams == GptjHparams(
        258, 16, 4, 2, 1, 2, GGMLFileType.ALL_F32
    )  # n_rot: the whole head
    assert model.vocab == BYTE_VOCAB and model.merges == [(b"a", b"b")]
    assert list(model.tensors) == ["transformer.wte.weight", "transformer.ln_f.weight"]
    assert model.quantization_version == 0


def test_control_tokens_are_read_as_literal_text(tmp_path):
    tokens = [
        f.value
        for f in gptj_fields(
            GptjHparams(258, 16, 4, 2, 1, 2, 0),
            layer_norm_eps=1e-5,
            n_inner=16,
            vocab=BYTE_VOCAB,
            merges=[],
            quantized=False,
        )
        if f.key == "tokenizer.ggml.tokens"
    ][0]
    tokens[-1] = (
        "<|end of text|>"  # a space, literal in a CONTROL token, would be invalid byte-level spelling
    )
    path = tiny_gptj_file(
        tmp_path / "c.gguf",
        replace={
            "tokenizer.ggml.tokens": GGUFField("tokenizer.ggml.tokens", V.ARRAY, tokens, V.STRING)
        },
    )
    assert open_model(path).vocab[-1] == b"<|end of text|>"


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            {
                "replace": {
                    "general.architecture": GGUFField("general.architecture", V.STRING, "llama")
                }
            },
            "architecture 'llama' is not GPT-J",
        ),
        (
            {"replace": {"gptj.block_count": GGUFField("gptj.block_count", V.INT32, 1)}},
            "metadata key 'gptj.block_count' has type INT32, expected UINT32",
        ),
        (
            {
                "replace": {
                    "gptj.attention.layer_norm_epsilon": GGUFField(
                        "gptj.attention.layer_norm_epsilon", V.FLOAT64, 1e-5
                    )
                }
            },
            "has type FLOAT64, expected FLOAT32",
        ),
        ({"drop": {"gptj.context_length"}}, "missing metadata key 'gptj.context_length'"),
        (
            {
                "replace": {
                    "gptj.rope.freq_base": GGUFField("gptj.rope.freq_base", V.FLOAT32, 20000.0)
                }
            },
            "gptj.rope.freq_base 20000.0 is not supported",
        ),
        (
            {"replace": {"gptj.vocab_size": GGUFField("gptj.vocab_size", V.UINT32, 50400)}},
            "gptj.vocab_size is 50400 but tokenizer.ggml.tokens has 258 tokens",
        ),
        (
            {
                "replace": {
                    "gptj.attention.head_count": GGUFField("gptj.attention.head_count", V.UINT32, 3)
                }
            },
            "gptj.embedding_length 4 is not a multiple of gptj.attention.head_count 3",
        ),
        (
            {
                "replace": {
                    "tokenizer.ggml.model": GGUFField("tokenizer.ggml.model", V.STRING, "llama")
                }
            },
            "tokenizer model 'llama' is not byte-level BPE",
        ),
        (
            {
                "replace": {
                    "tokenizer.ggml.merges": GGUFField(
                        "tokenizer.ggml.merges", V.ARRAY, ["a  b"], V.STRING
                    )
                }
            },
            "merge 0 is 'a  b', expected two tokens separated by one space",
        ),
        (
            {
                "replace": {
                    "tokenizer.ggml.tokens": GGUFField(
                        "tokenizer.ggml.tokens", V.ARRAY, ["a b"] * 258, V.STRING
                    )
                }
            },
            "token 0: token 'a b' has character ' ' outside the byte-level alphabet",
        ),
        (
            {
                "replace": {
                    "tokenizer.ggml.token_type": GGUFField(
                        "tokenizer.ggml.token_type", V.ARRAY, np.ones(3, np.int32), V.INT32
                    )
                }
            },
            "tokenizer.ggml.token_type has 3 entries for 258 tokens",
        ),
        (
            {"replace": {"general.file_type": GGUFField("general.file_type", V.UINT32, 32)}},
            "general.file_type 32 is not supported",
        ),
        (
            {"tensors": ["token_embd.weight", "blk.0.ffn_gate.weight"]},
            "tensor 'blk.0.ffn_gate.weight' is not part of GPT-J",
        ),
    ],
)
def test_gguf_that_is_not_a_runnable_gptj(tmp_path, edit, message):
    path = tiny_gptj_file(tmp_path / "x.gguf", **edit)
    with pytest.raises(ModelFileError, match=message) as caught:
        open_model(path)
    assert caught.value.path == str(path)


def test_writer_refuses_tensors_outside_gptj(tmp_path, peer):
    from ggml_py.formats.gptj_gguf import write_gptj_gguf

    legacy = open_model(legacy_path(peer, "q8_0"))
    records = [OutputTensor("transformer.wpe.weight", GGMLType.F32, (1,), [b"\0" * 4])]
    with pytest.raises(
        ModelFileError, match="tensor 'transformer.wpe.weight' is not part of GPT-J"
    ):
        write_gptj_gguf(
            tmp_path / "x.gguf",
            legacy.hparams,
            legacy.vocab,
            records,
            merges=[],
            layer_norm_eps=1e-5,
        )
    assert not os.listdir(tmp_path)
