"""GPT-J in GGUF files: llama.cpp's (gguf-py's) key names, value types, tensor names and
vocabulary spelling, over the model-agnostic container of ``ggml_py.formats.gguf``.

``write_gptj_gguf`` writes Hugging Face-named tensors, a raw-byte vocabulary and its merges as
such a file; ``read_gptj_gguf`` (registered with ``ggml_py.formats.open_model``) reads one back
as a ``ModelFile`` with Hugging Face names, raw-byte tokens and merges. ``spec/gguf-gptj.md``
describes the format.
"""

from __future__ import annotations

import enum
import os
import re
from collections.abc import Sequence

import numpy as np

from ggml_py._atomic import atomic_output
from ggml_py.errors import ModelFileError, TokenizerError
from ggml_py.formats.gguf import (
    DEFAULT_ALIGNMENT,
    GGUFField,
    GGUFReader,
    GGUFValueType,
    write_gguf,
)
from ggml_py.formats.gptj import FC_IN_WEIGHT, ROPE_BASE, GptjHparams, mlp_width
from ggml_py.formats.model_file import ModelFile, OutputTensor, ProgressCallback, TensorInfo
from ggml_py.formats.quant import QNT_VERSION, QUANTIZED_TYPES, GGMLFileType
from ggml_py.tokenizer import ENDOFTEXT, bytes_to_token, is_control_token, token_to_bytes


class GGUFTokenType(enum.IntEnum):
    """Values of ``tokenizer.ggml.token_type`` (llama.cpp's ``llama_token_type``)."""

    NORMAL = 1
    UNKNOWN = 2
    CONTROL = 3
    USER_DEFINED = 4
    UNUSED = 5
    BYTE = 6


GPTJ_ARCHITECTURE = "gptj"
TOKENIZER_MODEL = "gpt2"
TOKENIZER_PRE = "gpt-2"

# Hugging Face module name -> llama.cpp tensor base name (gguf-py MODEL_TENSORS[GPTJ]).
_GLOBAL_TENSORS = {
    "transformer.wte": "token_embd",
    "transformer.ln_f": "output_norm",
    "lm_head": "output",
}
_LAYER_TENSORS = {
    "ln_1": "attn_norm",
    "attn.q_proj": "attn_q",
    "attn.k_proj": "attn_k",
    "attn.v_proj": "attn_v",
    "attn.out_proj": "attn_output",
    "mlp.fc_in": "ffn_up",
    "mlp.fc_out": "ffn_down",
}
_GLOBAL_TENSORS_BACK = {gguf: hf for hf, gguf in _GLOBAL_TENSORS.items()}
_LAYER_TENSORS_BACK = {gguf: hf for hf, gguf in _LAYER_TENSORS.items()}
_LAYER_INDEX = r"(0|[1-9][0-9]*)"
_HF_LAYER_NAME = re.compile(rf"transformer\.h\.{_LAYER_INDEX}\.(.+)\.(weight|bias)")
_GGUF_LAYER_NAME = re.compile(rf"blk\.{_LAYER_INDEX}\.(.+)\.(weight|bias)")
_GLOBAL_NAME = re.compile(r"(.+)\.(weight|bias)")


def gguf_tensor_name(hf_name: str) -> str | None:
    """The llama.cpp name of a Hugging Face GPT-J tensor, or ``None`` if it has none.

    >>> gguf_tensor_name("transformer.h.3.mlp.fc_in.bias"), gguf_tensor_name("lm_head.weight")
    ('blk.3.ffn_up.bias', 'output.weight')
    >>> gguf_tensor_name("transformer.h.0.attn.masked_bias") is None
    True
    """
    return _rename(hf_name, _HF_LAYER_NAME, _LAYER_TENSORS, "blk.", _GLOBAL_TENSORS)


def hf_tensor_name(gguf_name: str) -> str | None:
    """The Hugging Face name of a llama.cpp GPT-J tensor name, or ``None`` if unknown.

    >>> hf_tensor_name("blk.27.attn_output.weight")
    'transformer.h.27.attn.out_proj.weight'
    """
    return _rename(
        gguf_name, _GGUF_LAYER_NAME, _LAYER_TENSORS_BACK, "transformer.h.", _GLOBAL_TENSORS_BACK
    )


def _rename(
    name: str,
    layer_name: re.Pattern[str],
    layer_parts: dict[str, str],
    layer_prefix: str,
    global_parts: dict[str, str],
) -> str | None:
    """Translate a ``<layer prefix><N>.<part>.<weight|bias>`` or ``<part>.<weight|bias>`` name
    through the part tables; ``None`` when the part is not in them."""
    layer = layer_name.fullmatch(name)
    if layer:
        index, part, suffix = layer.groups()
        translated = layer_parts.get(part)
        return None if translated is None else f"{layer_prefix}{index}.{translated}.{suffix}"
    plain = _GLOBAL_NAME.fullmatch(name)
    translated = plain and global_parts.get(plain.group(1))
    return f"{translated}.{plain.group(2)}" if translated else None


def gguf_token_strings(vocab: Sequence[bytes]) -> tuple[list[str], np.ndarray]:
    """``tokenizer.ggml.tokens`` and ``tokenizer.ggml.token_type`` for a raw-byte vocabulary.

    Every token is spelled in the byte-level alphabet, as in vocab.json (control tokens are
    printable ASCII, which that alphabet leaves unchanged); ``<|...|>`` tokens are CONTROL.

    >>> gguf_token_strings([b" the", b"<|endoftext|>"])
    (['Ġthe', '<|endoftext|>'], array([1, 3], dtype=int32))
    """
    strings = [bytes_to_token(token) for token in vocab]
    types = np.array(
        [
            GGUFTokenType.CONTROL if is_control_token(token) else GGUFTokenType.NORMAL
            for token in vocab
        ],
        dtype=np.int32,
    )
    return strings, types


def gptj_fields(
    hparams: GptjHparams,
    *,
    layer_norm_eps: float,
    n_inner: int,
    vocab: Sequence[bytes],
    merges: Sequence[tuple[bytes, bytes]],
    quantized: bool,
    name: str = "",
) -> list[GGUFField]:
    """The metadata of a GPT-J GGUF file, in the order written.

    ``general.file_type`` is ``hparams.ftype``: llama.cpp's file type numbers coincide with
    ggml's for every ``GGMLFileType`` (0, 1, 2, 3, 7, 8, 9).
    """
    u32, f32, text, array = (
        GGUFValueType.UINT32,
        GGUFValueType.FLOAT32,
        GGUFValueType.STRING,
        GGUFValueType.ARRAY,
    )
    fields = [GGUFField("general.architecture", text, GPTJ_ARCHITECTURE)]
    if name:
        fields.append(GGUFField("general.name", text, name))
    fields.append(GGUFField("general.file_type", u32, int(hparams.ftype)))
    if quantized:
        fields.append(GGUFField("general.quantization_version", u32, QNT_VERSION))
    fields += [
        GGUFField("general.alignment", u32, DEFAULT_ALIGNMENT),
        GGUFField("gptj.context_length", u32, hparams.n_ctx),
        GGUFField("gptj.embedding_length", u32, hparams.n_embd),
        GGUFField("gptj.block_count", u32, hparams.n_layer),
        GGUFField("gptj.feed_forward_length", u32, n_inner),
        GGUFField("gptj.attention.head_count", u32, hparams.n_head),
        GGUFField("gptj.attention.layer_norm_epsilon", f32, layer_norm_eps),
        GGUFField("gptj.rope.dimension_count", u32, hparams.n_rot),
        GGUFField("gptj.rope.freq_base", f32, ROPE_BASE),
        GGUFField("gptj.vocab_size", u32, hparams.n_vocab),
    ]
    strings, types = gguf_token_strings(vocab)
    fields += [
        GGUFField("tokenizer.ggml.model", text, TOKENIZER_MODEL),
        GGUFField("tokenizer.ggml.pre", text, TOKENIZER_PRE),
        GGUFField("tokenizer.ggml.tokens", array, strings, text),
        GGUFField("tokenizer.ggml.token_type", array, types, GGUFValueType.INT32),
        GGUFField(
            "tokenizer.ggml.merges",
            array,
            [f"{bytes_to_token(a)} {bytes_to_token(b)}" for a, b in merges],
            text,
        ),
    ]
    end_of_text = ENDOFTEXT.encode()
    if end_of_text in vocab:
        end_of_text_id = list(vocab).index(end_of_text)
        fields += [
            GGUFField("tokenizer.ggml.bos_token_id", u32, end_of_text_id),
            GGUFField("tokenizer.ggml.eos_token_id", u32, end_of_text_id),
            GGUFField("tokenizer.ggml.unknown_token_id", u32, end_of_text_id),
        ]
    fields.append(GGUFField("tokenizer.ggml.add_bos_token", GGUFValueType.BOOL, False))
    return fields


def write_gptj_gguf(
    path: str | os.PathLike[str],
    hparams: GptjHparams,
    vocab: Sequence[bytes],
    records: Sequence[OutputTensor],
    *,
    merges: Sequence[tuple[bytes, bytes]],
    layer_norm_eps: float,
    name: str = "",
    progress: ProgressCallback | None = None,
) -> None:
    """Write a GPT-J GGUF file atomically, like ``ggml.write_ggml`` writes a legacy one.

    ``records`` carry Hugging Face names and are written in their order under llama.cpp names;
    ``merges`` are written as given (``ggml_py.tokenizer.derive_merges`` recovers them from a
    GPT-2-style vocabulary that comes without).
    """
    path = os.fspath(path)
    if len(vocab) != hparams.n_vocab:
        raise ModelFileError(path, f"{len(vocab)} tokens given for n_vocab = {hparams.n_vocab}")
    gguf_records = []
    for record in records:
        gguf_name = gguf_tensor_name(record.name)
        if gguf_name is None:
            raise ModelFileError(path, f"tensor {record.name!r} is not part of GPT-J")
        gguf_records.append(record._replace(name=gguf_name))
    fc_in = next((record for record in records if record.name == FC_IN_WEIGHT), None)
    n_inner = mlp_width(hparams.n_embd, None if fc_in is None else fc_in.shape)
    fields = gptj_fields(
        hparams,
        layer_norm_eps=layer_norm_eps,
        n_inner=n_inner,
        vocab=vocab,
        merges=merges,
        quantized=any(record.type in QUANTIZED_TYPES for record in records),
        name=name,
    )
    with atomic_output(path) as out:
        write_gguf(out, fields, gguf_records, path=path, progress=progress)


def _require_string(gguf: GGUFReader, key: str, expected: str, what: str, meaning: str) -> None:
    """Refuse the file unless its string field ``key`` is ``expected`` (which means ``meaning``)."""
    value = gguf.field(key, GGUFValueType.STRING)
    if value != expected:
        raise ModelFileError(
            gguf.path, f"{what} {value!r} is not {meaning} ({expected!r})", gguf.offset_of(key)
        )


def read_gptj_gguf(path: str | os.PathLike[str]) -> ModelFile:
    """Read a GPT-J GGUF file as a ``ModelFile`` (Hugging Face tensor names, raw-byte tokens);
    see ``ggml_py.formats.open_model``."""
    gguf = GGUFReader(path)
    path = gguf.path
    _require_string(gguf, "general.architecture", GPTJ_ARCHITECTURE, "architecture", "GPT-J")
    _require_string(
        gguf, "tokenizer.ggml.model", TOKENIZER_MODEL, "tokenizer model", "byte-level BPE"
    )
    tensors = {}
    for gguf_name, info in gguf.tensors.items():
        hf_name = hf_tensor_name(gguf_name)
        if hf_name is None:
            raise ModelFileError(path, f"tensor {gguf_name!r} is not part of GPT-J", info.offset)
        tensors[hf_name] = info._replace(name=hf_name)
    vocab = _read_vocab(gguf)
    merges = _read_merges(gguf)
    u32 = GGUFValueType.UINT32
    n_embd = gguf.field("gptj.embedding_length", u32)
    n_head = gguf.field("gptj.attention.head_count", u32)
    if n_head == 0 or n_embd % n_head:
        raise ModelFileError(
            path,
            f"gptj.embedding_length {n_embd} is not a multiple of gptj.attention.head_count {n_head}",
            gguf.offset_of("gptj.attention.head_count"),
        )
    n_rot = gguf.optional_field("gptj.rope.dimension_count", u32)
    n_vocab = gguf.optional_field("gptj.vocab_size", u32)
    if n_vocab is not None and n_vocab != len(vocab):
        raise ModelFileError(
            path,
            f"gptj.vocab_size is {n_vocab} but tokenizer.ggml.tokens has {len(vocab)} tokens",
            gguf.offset_of("gptj.vocab_size"),
        )
    freq_base = gguf.optional_field("gptj.rope.freq_base", GGUFValueType.FLOAT32)
    if freq_base not in (None, ROPE_BASE):
        raise ModelFileError(
            path,
            f"gptj.rope.freq_base {freq_base} is not supported (GPT-J uses {ROPE_BASE:g})",
            gguf.offset_of("gptj.rope.freq_base"),
        )
    hparams = GptjHparams(
        n_vocab=len(vocab),
        n_ctx=gguf.field("gptj.context_length", u32),
        n_embd=n_embd,
        n_head=n_head,
        n_layer=gguf.field("gptj.block_count", u32),
        n_rot=n_embd // n_head if n_rot is None else n_rot,  # llama.cpp's default: the whole head
        ftype=_file_type(gguf, tensors),
    )
    return ModelFile(
        path=path,
        format="gguf",
        hparams=hparams,
        layer_norm_eps=gguf.field("gptj.attention.layer_norm_epsilon", GGUFValueType.FLOAT32),
        vocab=vocab,
        merges=merges,
        tensors=tensors,
        quantization_version=gguf.optional_field("general.quantization_version", u32) or 0,
    )


def _read_vocab(gguf: GGUFReader) -> list[bytes]:
    """Raw bytes of every token: control and user-defined tokens are literal UTF-8 text (as
    llama.cpp prints them), all others are spelled in the byte-level alphabet."""
    strings = gguf.field("tokenizer.ggml.tokens", GGUFValueType.ARRAY, GGUFValueType.STRING)
    types = gguf.optional_field(
        "tokenizer.ggml.token_type", GGUFValueType.ARRAY, GGUFValueType.INT32
    )
    if types is not None and len(types) != len(strings):
        raise ModelFileError(
            gguf.path,
            f"tokenizer.ggml.token_type has {len(types)} entries for {len(strings)} tokens",
            gguf.offset_of("tokenizer.ggml.token_type"),
        )
    literal = (
        set()
        if types is None
        else set(
            np.flatnonzero(
                np.isin(types, (GGUFTokenType.CONTROL, GGUFTokenType.USER_DEFINED))
            ).tolist()
        )
    )
    vocab = []
    for token_id, text in enumerate(strings):
        if token_id in literal:
            vocab.append(text.encode("utf-8"))
            continue
        try:
            vocab.append(token_to_bytes(text))
        except TokenizerError as error:
            raise ModelFileError(
                gguf.path,
                f"token {token_id}: {error.reason}",
                gguf.offset_of("tokenizer.ggml.tokens"),
            ) from None
    return vocab


def _read_merges(gguf: GGUFReader) -> list[tuple[bytes, bytes]] | None:
    lines = gguf.optional_field("tokenizer.ggml.merges", GGUFValueType.ARRAY, GGUFValueType.STRING)
    if lines is None:
        return None
    merges = []
    for rank, line in enumerate(lines):
        pair = line.split(" ")
        if len(pair) != 2 or not pair[0] or not pair[1]:
            raise ModelFileError(
                gguf.path,
                f"merge {rank} is {line!r}, expected two tokens separated by one space",
                gguf.offset_of("tokenizer.ggml.merges"),
            )
        try:
            merges.append((token_to_bytes(pair[0]), token_to_bytes(pair[1])))
        except TokenizerError as error:
            raise ModelFileError(
                gguf.path, f"merge {rank}: {error.reason}", gguf.offset_of("tokenizer.ggml.merges")
            ) from None
    return merges


def _file_type(gguf: GGUFReader, tensors: dict[str, TensorInfo]) -> GGMLFileType:
    """``general.file_type``, or when absent the file type whose weight type the token embedding has."""
    value = gguf.optional_field("general.file_type", GGUFValueType.UINT32)
    if value is not None:
        try:
            return GGMLFileType(value)
        except ValueError:
            raise ModelFileError(
                gguf.path,
                f"general.file_type {value} is not supported",
                gguf.offset_of("general.file_type"),
            ) from None
    embedding = tensors.get("transformer.wte.weight")
    if embedding is None:
        raise ModelFileError(
            gguf.path, "no general.file_type and no token_embd.weight to infer it from"
        )
    return next(file_type for file_type in GGMLFileType if file_type.weight_type is embedding.type)
