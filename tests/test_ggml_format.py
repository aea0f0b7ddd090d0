"""Reading and writing ggml's legacy GPT-J file.

Golden data: the files ggml's converter and quantizer wrote (../shared/peer/tiny-gptj). Damaged
files must fail with a ModelFileError naming the file and the byte offset, never with another
exception or an out-of-bounds view.
"""

from __future__ import annotations

import hashlib
import struct

import numpy as np
import pytest

from ggml_py.errors import ModelFileError
from ggml_py.formats import GptjHparams, open_model
from ggml_py.formats.ggml import pack_tensor_header, write_ggml
from ggml_py.formats.model_file import OutputTensor
from ggml_py.formats.quant import GGMLFileType, GGMLType, quantize

PEER_FILES = ["f32", "f16", "q4_0", "q4_1", "q5_0", "q5_1", "q8_0"]
TINY_ORDER = (
    ["transformer.wte.weight"]
    + [
        f"transformer.h.{layer}.{suffix}"
        for layer in range(2)
        for suffix in (
            "ln_1.weight",
            "ln_1.bias",
            "attn.k_proj.weight",
            "attn.v_proj.weight",
            "attn.q_proj.weight",
            "attn.out_proj.weight",
            "mlp.fc_in.weight",
            "mlp.fc_in.bias",
            "mlp.fc_out.weight",
            "mlp.fc_out.bias",
        )
    ]
    + ["transformer.ln_f.weight", "transformer.ln_f.bias", "lm_head.weight", "lm_head.bias"]
)


@pytest.mark.parametrize("kind", PEER_FILES)
def test_reads_ggml_files(peer, expected, kind):
    path = peer / "tiny-gptj" / f"ggml-model-{kind}.bin"
    header = expected["ggml_files"][path.name]["header"]
    model = open_model(path)
    assert model.format == "ggml" and model.merges is None and model.layer_norm_eps == 1e-5
    assert model.hparams[:6] == tuple(
        header[k] for k in ("n_vocab", "n_ctx", "n_embd", "n_head", "n_layer", "n_rot")
    )
    assert model.quantization_version * 1000 + model.hparams.ftype == header["ftype"]
    assert len(model.vocab) == 50400
    assert (
        model.vocab[50256] == b"<|endoftext|>"
        and model.vocab[220] == b" "
        and model.vocab[198] == b"\n"
    )
    assert model.vocab[50257] == b"<|extratoken_1|>"
    assert list(model.tensors) == TINY_ORDER
    weight_type = model.hparams.ftype.weight_type
    end = None
    for info in model.tensors.values():
        assert info.type is (weight_type if len(info.shape) == 2 else GGMLType.F32)
        assert info.data.nbytes == info.nbytes and not info.data.flags.writeable
        end = info.offset + info.nbytes
    assert model.tensors["transformer.wte.weight"].shape == (50400, 64)
    assert model.tensors["transformer.h.1.mlp.fc_in.weight"].shape == (256, 64)
    # header 32 + count 4 + GPT-J vocabulary 524,893 = 524,929; then the wte record header
    assert model.tensors["transformer.wte.weight"].offset == 524_929 + 12 + 8 + len(
        "transformer.wte.weight"
    )
    assert end == path.stat().st_size


def test_f16_file_holds_the_f32_files_values(peer):
    f32 = open_model(peer / "tiny-gptj" / "ggml-model-f32.bin")
    f16 = open_model(peer / "tiny-gptj" / "ggml-model-f16.bin")
    for name, info in f16.tensors.items():
        exact = f32.tensors[name].data.view("<f4")
        values = (
            info.data.view("<f2").astype(np.float32)
            if info.type is GGMLType.F16
            else info.data.view("<f4")
        )
        np.testing.assert_array_equal(values, exact)  # the checkpoint is f16: both are exact


@pytest.mark.parametrize("kind", ["f16", "q5_1"])
def test_rewriting_a_read_file_gives_the_same_bytes(peer, tmp_path, kind):
    source = peer / "tiny-gptj" / f"ggml-model-{kind}.bin"
    model = open_model(source)
    records = [OutputTensor(i.name, i.type, i.shape, [i.data]) for i in model.tensors.values()]
    write_ggml(
        tmp_path / "copy.bin", model.hparams, model.vocab, records, model.quantization_version
    )
    assert sha256(tmp_path / "copy.bin") == sha256(source)


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def small_model(tmp_path):
    """A file with every tensor type, 1-3 dims and awkward token bytes; returns (path, boundaries)
    where boundaries are the offsets at which a record ends."""
    rng = np.random.default_rng(5)
    vocab = [b"", b"\x00\xff", "é".encode(), b"<|endoftext|>"]
    hparams = GptjHparams(len(vocab), 16, 64, 2, 1, 8, GGMLFileType.MOSTLY_Q4_1)
    arrays = {
        "a.weight": (GGMLType.Q4_1, rng.standard_normal((3, 64))),
        "b.bias": (GGMLType.F32, rng.standard_normal(5)),
        "c.weight": (GGMLType.F16, rng.standard_normal((2, 3, 4))),
        "d.weight": (GGMLType.Q8_0, rng.standard_normal((1, 32))),
    }
    for ggml_type in (GGMLType.Q4_0, GGMLType.Q5_0, GGMLType.Q5_1):
        arrays[f"{ggml_type.short_name}.weight"] = (ggml_type, rng.standard_normal((2, 32)))
    records = [OutputTensor(name, t, a.shape, [quantize(a, t)]) for name, (t, a) in arrays.items()]
    path = tmp_path / "small.bin"
    write_ggml(path, hparams, vocab, records, quantization_version=2)
    model = open_model(path)
    boundaries = [info.offset + info.nbytes for info in model.tensors.values()]
    first_record = min(info.offset for info in model.tensors.values()) - len(
        pack_tensor_header("a.weight", GGMLType.Q4_1, (3, 64))
    )
    return path, hparams, vocab, arrays, [first_record] + boundaries


def test_write_read_round_trip(tmp_path):
    path, hparams, vocab, arrays, _ = small_model(tmp_path)
    model = open_model(path)
    assert model.hparams == hparams and model.vocab == vocab and model.quantization_version == 2
    assert struct.unpack_from("<i", path.read_bytes(), 28)[0] == 2003
    assert list(model.tensors) == list(arrays)
    for name, (ggml_type, array) in arrays.items():
        info = model.tensors[name]
        assert (info.type, info.shape) == (ggml_type, array.shape)
        assert info.data.tobytes() == quantize(array, ggml_type).tobytes()


def test_every_truncation_is_reported_with_the_offset(tmp_path):
    path, _, _, arrays, boundaries = small_model(tmp_path)
    data = path.read_bytes()
    cut = tmp_path / "cut.bin"
    for length in range(len(data)):
        cut.write_bytes(data[:length])
        if length in boundaries:  # a shorter but well-formed file
            assert len(open_model(cut).tensors) == boundaries.index(length)
            continue
        with pytest.raises(ModelFileError) as caught:
            open_model(cut)
        assert str(caught.value).startswith(f"{cut}: ") and "(at byte " in str(caught.value), length
        assert 0 <= caught.value.offset <= length


def corrupt(path, offset: int, fmt: str, value) -> None:
    data = bytearray(path.read_bytes())
    struct.pack_into(fmt, data, offset, value)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "field_offset, fmt, value, message",
    [
        (0, "<I", 0x67676D6D, "not a ggml GPT-J model file"),
        (4, "<i", -3, "n_vocab = -3"),
        (16, "<i", 0, "n_head = 0"),
        (28, "<i", 2004, "unsupported ftype 2004"),
        (28, "<i", -1, "ftype = -1"),
        (32, "<i", 5, "vocabulary has 5 tokens, the header says n_vocab = 4"),
        (36, "<I", 0xFFFFFFF0, "token 0 of 4294967280 bytes runs past the end"),
    ],
)
def test_damaged_header_and_vocabulary(tmp_path, field_offset, fmt, value, message):
    path = small_model(tmp_path)[0]
    corrupt(path, field_offset, fmt, value)
    with pytest.raises(ModelFileError, match=message) as caught:
        open_model(path)
    assert caught.value.offset is not None


def test_huge_counts_fail_before_any_loop(tmp_path):
    path = small_model(tmp_path)[0]
    corrupt(path, 4, "<i", 2**31 - 1)
    corrupt(path, 32, "<i", 2**31 - 1)
    with pytest.raises(ModelFileError, match="file ends inside the vocabulary"):
        open_model(path)


@pytest.mark.parametrize(
    "field, fmt, value, message",
    [
        (0, "<i", 0, "n_dims = 0"),
        (0, "<i", 5, "n_dims = 5"),
        (4, "<i", 0, "name length 0"),
        (4, "<i", 10**9, "file ends inside a tensor record header"),
        (8, "<i", 4, "unsupported tensor type 4"),
        (12, "<i", -64, r"dimensions \[-64, 3\]"),
        (12, "<i", 48, "not a multiple of the q4_1 block size 32"),
        (16, "<i", 10**6, "needs 40000000 bytes of data"),
        (20, "<B", 0xFF, "tensor name is not UTF-8"),
    ],
)
def test_damaged_tensor_record(tmp_path, field, fmt, value, message):
    path, *_, boundaries = small_model(tmp_path)
    record = boundaries[0]  # the "a.weight" record: n_dims 2, ne [64, 3], name at +20
    corrupt(path, record + field, fmt, value)
    with pytest.raises(ModelFileError, match=message) as caught:
        open_model(path)
    assert record <= caught.value.offset <= record + 20 + len("a.weight")


def test_duplicate_tensor_name(tmp_path):
    rows = np.ones((1, 4), np.float32)
    records = [OutputTensor("x", GGMLType.F32, (1, 4), [rows])] * 2
    path = tmp_path / "dup.bin"
    write_ggml(path, GptjHparams(1, 1, 4, 1, 1, 0, GGMLFileType.ALL_F32), [b"a"], records)
    with pytest.raises(ModelFileError, match="'x' appears twice"):
        open_model(path)


def test_not_a_model_file(tmp_path):
    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / "text").write_text("hello world, not a model")
    with pytest.raises(ModelFileError, match="too short"):
        open_model(tmp_path / "empty")
    with pytest.raises(ModelFileError, match="magic bytes 68656c6c"):
        open_model(tmp_path / "text")


def test_writer_checks_what_it_is_given(tmp_path):
    hparams = GptjHparams(2, 1, 4, 1, 1, 0, GGMLFileType.ALL_F32)
    with pytest.raises(ModelFileError, match="1 tokens given for n_vocab = 2"):
        write_ggml(tmp_path / "a.bin", hparams, [b"a"], [])
    short = OutputTensor("x", GGMLType.F32, (1, 4), [np.ones(3, np.float32)])
    with pytest.raises(ModelFileError, match="got 12 bytes of data, expected 16"):
        write_ggml(tmp_path / "b.bin", hparams, [b"a", b"b"], [short])
    assert not list(tmp_path.iterdir())  # nothing left behind by the failed writes
