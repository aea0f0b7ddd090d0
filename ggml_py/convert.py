"""Hugging Face GPT-J folder -> ggml GPT-J or GGUF file, ggml file -> quantized ggml file, and
ggml file -> GGUF file.

Both stream: tensors are read, encoded and written a block of rows at a time, and the output
appears at its path only when it is complete (``ggml_py._atomic.atomic_output``). The bytes are
those of ggml's ``convert-h5-to-ggml.py`` and ``gpt-j-quantize``; ``spec/ggml-gptj.md`` gives
the rules, including where this converter deliberately differs (vocabulary placement and
padding, which ggml gets wrong for some folders).

Problems that still allow a correct file (a vocabulary shorter than the model, tokens beyond it,
an epsilon the format cannot store) are reported as ``ConversionWarning`` through ``warnings``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Iterator, Sequence

import numpy as np

from ggml_py.checkpoint import open_checkpoint
from ggml_py.errors import CheckpointError, ModelFileError, TokenizerError
from ggml_py.formats import open_model
from ggml_py.formats.ggml import LAYER_NORM_EPS, write_ggml
from ggml_py.formats.gptj import GptjHparams, mlp_width, tensor_names, tensor_shapes
from ggml_py.formats.gptj_gguf import write_gptj_gguf
from ggml_py.formats.model_file import OutputTensor, ProgressCallback
from ggml_py.formats.quant import (
    BLOCK_FORMATS,
    QNT_VERSION,
    QUANTIZED_TYPES,
    GGMLFileType,
    GGMLType,
    quantize,
)
from ggml_py.tokenizer import (
    derive_merges,
    read_json_object,
    read_merges,
    read_unique_token_ids,
    token_to_bytes,
)

# Elements encoded per step: bounds the temporaries of one step to a few tens of MB.
_CHUNK_ELEMENTS = 1 << 22
# Bytes read per step when a tensor is copied unchanged.
_CHUNK_BYTES = 1 << 22
# Tensors that older transformers versions stored in the state dict (attention mask buffers);
# ggml's converter skips them.
_SKIPPED_SUFFIXES = ("attn.bias", "attn.masked_bias")


class ConversionWarning(UserWarning):
    """The output is valid, but something about the input deserves the user's attention."""


def record_type(name: str, n_dims: int, file_type: GGMLFileType) -> GGMLType:
    """ggml's rule: 2-D tensors whose name ends in ``weight`` take the file's weight type, every
    other tensor (layer norms, biases) stays f32."""
    return file_type.weight_type if name.endswith("weight") and n_dims == 2 else GGMLType.F32


FILE_FORMATS = ("ggml", "gguf")


def default_outfile(
    hf_dir: str | os.PathLike[str], file_type: GGMLFileType, file_format: str = "ggml"
) -> str:
    """``HF_DIR/ggml-model-<type>.bin``, the name ggml's converter uses (``ggml-model-f16.bin``),
    or ``HF_DIR/ggml-model-<type>.gguf`` for GGUF."""
    extension = ".gguf" if file_format == "gguf" else ".bin"
    return os.path.join(os.fspath(hf_dir), f"ggml-model-{file_type.short_name}{extension}")


def convert_hf(
    hf_dir: str | os.PathLike[str],
    file_type: GGMLFileType = GGMLFileType.MOSTLY_F16,
    outfile: str | os.PathLike[str] | None = None,
    progress: ProgressCallback | None = None,
    file_format: str = "ggml",
) -> str:
    """Convert a Hugging Face GPT-J folder to a ggml (or, with ``file_format="gguf"``, a GGUF)
    file of ``file_type``; returns the path. GGUF files get the folder's merges.txt (derived
    from the vocabulary, with a warning, when there is none) and its layer_norm_epsilon.

    Quantized types encode each 2-D weight from the checkpoint's values widened to float32, which
    for f16 checkpoints are exactly the values of the f16 file, so the result equals converting to
    f16 and then quantizing; for f32 or bf16 checkpoints it equals converting to f32 and then
    quantizing (one rounding fewer than going through f16).

    An unknown ``file_type`` or ``file_format`` is a ``ValueError``; problems with the folder's
    files are ``CheckpointError`` or ``TokenizerError``.
    """
    hf_dir = os.fspath(hf_dir)
    file_type = GGMLFileType(file_type)
    if file_format not in FILE_FORMATS:
        raise ValueError(f"file_format must be one of {FILE_FORMATS}, not {file_format!r}")
    outfile = (
        default_outfile(hf_dir, file_type, file_format) if outfile is None else os.fspath(outfile)
    )
    config = _read_config(hf_dir)
    if file_format == "ggml" and config["layer_norm_epsilon"] != LAYER_NORM_EPS:
        warnings.warn(
            f"{hf_dir}: layer_norm_epsilon {config['layer_norm_epsilon']} cannot be stored, "
            f"ggml files always use {LAYER_NORM_EPS}",
            ConversionWarning,
            stacklevel=2,
        )
    checkpoint = open_checkpoint(hf_dir)
    tensors = _select_tensors(hf_dir, checkpoint, config)
    n_vocab = tensors["transformer.wte.weight"].shape[0]
    if (
        file_type.weight_type in QUANTIZED_TYPES
        and config["n_embd"] % BLOCK_FORMATS[file_type.weight_type].block_size
    ):
        raise CheckpointError(
            hf_dir,
            f"n_embd {config['n_embd']} is not a multiple of 32, cannot quantize to {file_type.short_name}",
        )
    hparams = GptjHparams(
        n_vocab,
        config["n_positions"],
        config["n_embd"],
        config["n_head"],
        config["n_layer"],
        config["n_rot"],
        file_type,
    )
    vocab = read_vocab(hf_dir, n_vocab)
    records = []
    for name, tensor in tensors.items():
        ggml_type = record_type(name, len(tensor.shape), file_type)
        records.append(
            OutputTensor(
                name, ggml_type, tensor.shape, _quantized_chunks(_row_blocks(tensor), ggml_type)
            )
        )
    if file_format == "gguf":
        merges = _folder_merges(hf_dir, vocab, required=False)
        name = os.path.basename(os.path.abspath(hf_dir))
        write_gptj_gguf(
            outfile,
            hparams,
            vocab,
            records,
            merges=merges,
            layer_norm_eps=config["layer_norm_epsilon"],
            name=name,
            progress=progress,
        )
        return outfile
    quantization_version = QNT_VERSION if file_type.weight_type in QUANTIZED_TYPES else 0
    write_ggml(outfile, hparams, vocab, records, quantization_version, progress)
    return outfile


def convert_to_gguf(
    source: str | os.PathLike[str],
    destination: str | os.PathLike[str],
    vocab_dir: str | os.PathLike[str] | None = None,
    progress: ProgressCallback | None = None,
) -> None:
    """Rewrite a ggml GPT-J model file (any type) as GGUF: hyperparameters, vocabulary and every
    tensor's bytes are copied unchanged (quantized blocks are repacked, never requantized).

    Merges come from ``vocab_dir/merges.txt`` when a tokenizer folder is given, else from the
    file itself when it has them (GGUF), else they are derived from the vocabulary by rank.
    """
    source = os.fspath(source)
    model = open_model(source)
    if vocab_dir is not None:
        merges = _folder_merges(vocab_dir, model.vocab, required=True)
    elif model.merges is not None:
        merges = model.merges
    else:
        merges = derive_merges(model.vocab)  # legacy ggml files carry none
    with open(source, "rb") as f:
        records = [
            OutputTensor(
                info.name, info.type, info.shape, _file_chunks(f, info.offset, info.nbytes)
            )
            for info in model.tensors.values()
        ]
        write_gptj_gguf(
            destination,
            model.hparams,
            model.vocab,
            records,
            merges=merges,
            layer_norm_eps=model.layer_norm_eps,
            progress=progress,
        )


def quantize_file(
    source: str | os.PathLike[str],
    destination: str | os.PathLike[str],
    file_type: GGMLFileType,
    progress: ProgressCallback | None = None,
) -> None:
    """What ``gpt-j-quantize`` does: copy header and vocabulary (ftype becomes 2000 + file_type),
    quantize every 2-D tensor whose name ends in ``weight`` and copy the others unchanged.

    A ``file_type`` that is unknown or not quantized is a ``ValueError``; problems with the
    source file are ``ModelFileError``."""
    source = os.fspath(source)
    file_type = GGMLFileType(file_type)
    if file_type.weight_type not in QUANTIZED_TYPES:
        raise ValueError(f"{file_type.short_name} is not a quantized type")
    model = open_model(source)
    if model.format != "ggml":
        raise ModelFileError(
            source, f"quantize reads legacy ggml GPT-J files, this is a {model.format} file"
        )
    block_size = BLOCK_FORMATS[file_type.weight_type].block_size
    with open(source, "rb") as f:
        records = []
        for info in model.tensors.values():
            ggml_type = record_type(info.name, len(info.shape), file_type)
            if ggml_type is GGMLType.F32:
                records.append(
                    OutputTensor(
                        info.name, info.type, info.shape, _file_chunks(f, info.offset, info.nbytes)
                    )
                )
                continue
            if info.type not in (GGMLType.F32, GGMLType.F16):
                raise ModelFileError(
                    source,
                    f"tensor {info.name!r} is {info.type.short_name}; quantize needs f32 or f16 input",
                    info.offset,
                )
            if info.shape[-1] % block_size:
                raise ModelFileError(
                    source,
                    f"tensor {info.name!r} has rows of {info.shape[-1]} elements, not a multiple of {block_size}",
                    info.offset,
                )
            rows = _file_rows(
                f, info.offset, info.shape, np.dtype("<f4" if info.type is GGMLType.F32 else "<f2")
            )
            records.append(
                OutputTensor(info.name, ggml_type, info.shape, _quantized_chunks(rows, ggml_type))
            )
        hparams = model.hparams._replace(ftype=file_type)
        write_ggml(destination, hparams, model.vocab, records, QNT_VERSION, progress)


# ---------------------------------------------------------------------------------------------
# Reading the Hugging Face folder


def _read_config(hf_dir: str) -> dict[str, int]:
    """The hyperparameters the ggml header stores (n_rot from ``rotary_dim``, which Hugging Face
    treats as the whole head when it is null), with the checks the file format needs."""
    path = os.path.join(hf_dir, "config.json")
    if not os.path.isfile(path):
        raise CheckpointError(
            hf_dir, "no config.json: a Hugging Face model folder has one beside its weights"
        )
    config = read_json_object(path, CheckpointError)
    if config.get("model_type", "gptj") != "gptj":
        raise CheckpointError(
            path, f"model_type is {config['model_type']!r}, only GPT-J ('gptj') can be converted"
        )
    values = {}
    for key in ("n_positions", "n_embd", "n_head", "n_layer"):
        value = config.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise CheckpointError(path, f"{key} must be a positive integer, found {value!r}")
        values[key] = value
    if values["n_embd"] % values["n_head"]:
        raise CheckpointError(
            path, f"n_embd {values['n_embd']} is not a multiple of n_head {values['n_head']}"
        )
    head_dim = values["n_embd"] // values["n_head"]
    rotary_dim = config.get("rotary_dim")
    values["n_rot"] = head_dim if rotary_dim is None else rotary_dim
    if not isinstance(values["n_rot"], int) or not 0 < values["n_rot"] <= head_dim:
        raise CheckpointError(path, f"rotary_dim {rotary_dim!r} does not fit a head of {head_dim}")
    n_inner = config.get("n_inner")
    if n_inner not in (None, mlp_width(values["n_embd"])):
        raise CheckpointError(
            path, f"n_inner {n_inner} is not 4 * n_embd, which the ggml format assumes"
        )
    epsilon = config.get("layer_norm_epsilon", LAYER_NORM_EPS)
    if not isinstance(epsilon, (int, float)) or isinstance(epsilon, bool) or not epsilon > 0:
        raise CheckpointError(
            path, f"layer_norm_epsilon must be a positive number, found {epsilon!r}"
        )
    values["layer_norm_epsilon"] = float(epsilon)
    values["tie_word_embeddings"] = bool(config.get("tie_word_embeddings", False))
    return values


def _select_tensors(hf_dir: str, checkpoint, config) -> dict[str, object]:
    """The GPT-J tensors in ggml's order, each checked for presence, float dtype and shape."""
    names = tensor_names(config["n_layer"])
    available = {
        name: tensor for name, tensor in checkpoint.items() if not name.endswith(_SKIPPED_SUFFIXES)
    }
    if (
        "lm_head.weight" not in available
        and config["tie_word_embeddings"]
        and "transformer.wte.weight" in available
    ):
        available["lm_head.weight"] = available["transformer.wte.weight"]
    missing = [name for name in names if name not in available]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise CheckpointError(hf_dir, f"tensor {missing[0]!r}{more} missing from the checkpoint")
    unused = [name for name in available if name not in names]
    if unused:
        warnings.warn(
            f"{hf_dir}: {len(unused)} tensors that GPT-J does not use are left out, e.g. {unused[0]!r}",
            ConversionWarning,
            stacklevel=3,
        )
    n_vocab = available["transformer.wte.weight"].shape[0]
    expected = tensor_shapes(n_vocab, config["n_embd"], config["n_layer"])
    selected = {}
    for name in names:
        tensor = available[name]
        if not (np.issubdtype(tensor.dtype, np.floating) or tensor.dtype.name == "bfloat16"):
            raise CheckpointError(
                hf_dir, f"tensor {name!r} has dtype {tensor.dtype}, a float type is needed"
            )
        if tuple(tensor.shape) != expected[name]:
            raise CheckpointError(
                hf_dir,
                f"tensor {name!r} has shape {list(tensor.shape)}, config.json implies {list(expected[name])}",
            )
        selected[name] = tensor
    return selected


def read_vocab(hf_dir: str | os.PathLike[str], n_vocab: int) -> list[bytes]:
    """Token bytes for ids 0..n_vocab-1 from ``vocab.json`` and ``added_tokens.json``.

    Every token goes to its own id, whatever the order of the JSON files. vocab.json spells bytes
    in GPT-2's byte-level alphabet; added tokens are plain text and are stored as UTF-8 (for the
    ASCII tokens ggml's converter handles, the two agree). Ids the files do not cover are filled
    with placeholders ``<|extratoken_1|>``, ``<|extratoken_2|>``, ... in id order, with a warning
    (for GPT-J-6B without added_tokens.json these are exactly its 143 added tokens). Added tokens
    at ids beyond the model are dropped with a warning; vocab.json ids beyond it are an error, as
    the tokenizer cannot belong to the model.
    """
    hf_dir = os.fspath(hf_dir)
    vocab_path = os.path.join(hf_dir, "vocab.json")
    added_path = os.path.join(hf_dir, "added_tokens.json")
    by_id: dict[int, bytes] = {}
    for token, token_id in read_unique_token_ids(vocab_path).items():
        if token_id >= n_vocab:
            raise TokenizerError(
                vocab_path, f"token id {token_id} is beyond the model's {n_vocab} embedding rows"
            )
        try:
            by_id[token_id] = token_to_bytes(token)
        except TokenizerError as error:
            raise TokenizerError(vocab_path, error.reason) from None
    dropped = []
    added = read_unique_token_ids(added_path) if os.path.exists(added_path) else {}
    for token, token_id in added.items():
        if token_id >= n_vocab:
            dropped.append(token)
        elif token_id in by_id:
            raise TokenizerError(
                added_path, f"token {token!r} has id {token_id}, which vocab.json already uses"
            )
        else:
            by_id[token_id] = token.encode("utf-8")
    if dropped:
        warnings.warn(
            f"{added_path}: {len(dropped)} added tokens have ids beyond the model's {n_vocab} rows "
            f"and are left out, e.g. {dropped[0]!r}",
            ConversionWarning,
            stacklevel=2,
        )
    missing = [token_id for token_id in range(n_vocab) if token_id not in by_id]
    if missing:
        warnings.warn(
            f"{hf_dir}: the tokenizer has {n_vocab - len(missing)} tokens for {n_vocab} embedding rows; "
            f"ids {missing[0]}..{missing[-1]} get placeholder tokens <|extratoken_N|>",
            ConversionWarning,
            stacklevel=2,
        )
        for number, token_id in enumerate(missing, start=1):
            by_id[token_id] = f"<|extratoken_{number}|>".encode("ascii")
    return [by_id[token_id] for token_id in range(n_vocab)]


def _folder_merges(
    folder: str | os.PathLike[str], vocab: Sequence[bytes], required: bool
) -> list[tuple[bytes, bytes]]:
    """The BPE merges of ``folder/merges.txt``, checked against the model's vocabulary (each
    merge must form a token of it). Without merges.txt: an error when ``required``, else a warning
    and the merges derived from the vocabulary."""
    path = os.path.join(os.fspath(folder), "merges.txt")
    if not os.path.isfile(path):
        if required:
            raise TokenizerError(folder, "no merges.txt in the tokenizer folder")
        warnings.warn(
            f"{folder}: no merges.txt, the merges are derived from the vocabulary",
            ConversionWarning,
            stacklevel=3,
        )
        return derive_merges(vocab)
    merges = read_merges(path)
    tokens = set(vocab)
    for rank, (left, right) in enumerate(merges):
        if left + right not in tokens:
            raise TokenizerError(
                path, f"merge {rank} forms {left + right!r}, which is not in the model's vocabulary"
            )
    return merges


# ---------------------------------------------------------------------------------------------
# Streaming the data


def _row_blocks(tensor) -> Iterator[np.ndarray]:
    """Consecutive blocks of whole rows (last axis) of a checkpoint tensor, about
    ``_CHUNK_ELEMENTS`` elements each; the tensor is only opened when the first block is due."""
    array = tensor.numpy()
    rows = array.reshape(-1, array.shape[-1])
    step = max(1, _CHUNK_ELEMENTS // max(1, rows.shape[1]))
    for start in range(0, rows.shape[0], step):
        yield rows[start : start + step]


def _quantized_chunks(
    row_blocks: Iterable[np.ndarray], ggml_type: GGMLType
) -> Iterator[np.ndarray]:
    # Widen to float32 first, as the reference tools do: f16 and bf16 are exact in f32, and an
    # f64 source is rounded once to f32 like Hugging Face would load it.
    for rows in row_blocks:
        yield quantize(np.asarray(rows, dtype=np.float32), ggml_type)


def _file_rows(f, offset: int, shape: Sequence[int], dtype: np.dtype) -> Iterator[np.ndarray]:
    """Blocks of rows of a tensor read with ordinary file reads (no mapping, so the pages do not
    stay in this process's resident set)."""
    row_len = int(shape[-1])
    n_rows = int(np.prod(shape[:-1], dtype=np.int64))
    step = max(1, _CHUNK_ELEMENTS // row_len)
    f.seek(offset)
    for start in range(0, n_rows, step):
        rows = np.empty((min(step, n_rows - start), row_len), dtype=dtype)
        if f.readinto(memoryview(rows).cast("B")) != rows.nbytes:
            raise ModelFileError(f.name, "file became shorter while it was read", offset)
        yield rows


def _file_chunks(f, offset: int, nbytes: int) -> Iterator[bytes]:
    f.seek(offset)
    remaining = nbytes
    while remaining:
        chunk = f.read(min(remaining, _CHUNK_BYTES))
        remaining -= len(chunk)
        yield chunk
