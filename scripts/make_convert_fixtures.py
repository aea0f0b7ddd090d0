"""Make the small GPT-J folders in tests/fixtures/convert/ and the bytes a ggml file of each must have.

Run by hand with the generator environment (torch, transformers, safetensors):

    /work/venv-gen/bin/python scripts/make_convert_fixtures.py

Each model below is created by transformers' ``GPTJForCausalLM`` with random weights and saved in
one or more containers (torch zip, torch legacy, safetensors, sharded safetensors via
``save_pretrained``, bfloat16, float32). For every folder the expected f32 and f16 ggml files are
built from what transformers loads back (``from_pretrained(..., dtype=float32).state_dict()``),
following ggml's ``convert-h5-to-ggml.py`` rules (state_dict order, ``ne`` = reversed shape,
2-D ``*.weight`` tensors as f16 in the f16 file, everything else f32). The token bytes come from
GPT-2's ``encoder.json`` spelled through transformers' ``bytes_to_unicode`` table, each token at
its id; added tokens are their UTF-8 text. Only sizes and sha256 of the expected files are kept
(expected.json), so the fixtures stay small.

One folder has fewer tokens than embedding rows: its expected vocabulary ends with the
placeholders ``<|extratoken_N|>`` that ggml-py's documented padding rule writes (ggml's own
converter would write a file its loader refuses there).
"""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
import struct
from pathlib import Path

import numpy as np
import safetensors.torch
import torch
from transformers import GPTJConfig, GPTJForCausalLM
from transformers.convert_slow_tokenizer import bytes_to_unicode

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "tests" / "fixtures" / "convert"
GPT2_VOCAB = REPO / "examples" / "tiny-gptj" / "vocab.json"
N_BASE_TOKENS = 298
ADDED_TOKENS = {"<|added_b|>": 299, "<|added_a|>": 298}  # deliberately not in id order

MODELS = [
    # name, config, embedding rows, containers
    (
        "e32-h4-l2",
        dict(n_embd=32, n_head=4, n_layer=2, rotary_dim=4, n_positions=64),
        300,
        ["torch-zip", "torch-legacy", "safetensors", "sharded", "bf16", "f32"],
    ),
    (
        "e64-h2-l1-fullrot",
        dict(n_embd=64, n_head=2, n_layer=1, rotary_dim=32, n_positions=32),
        300,
        ["safetensors"],
    ),
    # 304 rows for 300 tokens: the converter pads; the checkpoint also carries the attention
    # buffers that transformers < 4.30 saved (attn.bias, attn.masked_bias), which are skipped.
    (
        "e96-h3-l1-padded",
        dict(n_embd=96, n_head=3, n_layer=1, rotary_dim=8, n_positions=16),
        304,
        ["torch-zip"],
    ),
]


def make_model(config_values: dict, n_rows: int, seed: int) -> GPTJForCausalLM:
    torch.manual_seed(seed)
    config = GPTJConfig(
        vocab_size=n_rows, initializer_range=0.3, bos_token_id=0, eos_token_id=0, **config_values
    )
    model = GPTJForCausalLM(config).eval()
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # non-trivial layer norms and biases, so every tensor matters
        for name, parameter in model.named_parameters():
            if parameter.ndim == 1:
                base = 1.0 if name.endswith("ln_1.weight") or name.endswith("ln_f.weight") else 0.0
                parameter.copy_(base + 0.1 * torch.randn(parameter.shape, generator=generator))
    return model


def write_tokenizer(folder: Path) -> None:
    gpt2 = json.loads(GPT2_VOCAB.read_text(encoding="utf-8"))
    base = {token: token_id for token, token_id in gpt2.items() if token_id < N_BASE_TOKENS}
    (folder / "vocab.json").write_text(json.dumps(base, ensure_ascii=False), encoding="utf-8")
    (folder / "added_tokens.json").write_text(json.dumps(ADDED_TOKENS), encoding="utf-8")


def save_container(
    model: GPTJForCausalLM, folder: Path, container: str, extra_buffers: bool
) -> None:
    folder.mkdir(parents=True)
    model.config.save_pretrained(folder)
    # f16 containers hold the float32 model rounded to f16; "f32" and "bf16" round it their way,
    # so those values are not f16-exact (converting them to f16 or q* rounds differently)
    full = {name: tensor.contiguous() for name, tensor in model.state_dict().items()}
    state = {name: tensor.half() for name, tensor in full.items()}
    if extra_buffers:
        n_positions = model.config.n_positions
        for layer in range(model.config.n_layer):
            mask = torch.tril(torch.ones((n_positions, n_positions), dtype=torch.bool))
            state[f"transformer.h.{layer}.attn.bias"] = mask.view(1, 1, n_positions, n_positions)
            state[f"transformer.h.{layer}.attn.masked_bias"] = torch.tensor(-1e9)
    if container in ("bf16", "f32"):
        state = {
            name: tensor.to(torch.bfloat16 if container == "bf16" else torch.float32)
            for name, tensor in full.items()
        }
    if container == "torch-zip":
        torch.save(state, folder / "pytorch_model.bin")
    elif container == "torch-legacy":
        torch.save(state, folder / "pytorch_model.bin", _use_new_zipfile_serialization=False)
    elif container == "safetensors":
        safetensors.torch.save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    elif container == "sharded":
        copy.deepcopy(model).half().save_pretrained(folder, max_shard_size="40KB")
    elif container == "bf16":
        safetensors.torch.save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    elif container == "f32":
        torch.save(state, folder / "pytorch_model.bin")
    else:
        raise ValueError(container)
    write_tokenizer(folder)


def expected_vocab(n_rows: int) -> list:
    byte_decoder = {char: byte for byte, char in bytes_to_unicode().items()}
    gpt2 = json.loads(GPT2_VOCAB.read_text(encoding="utf-8"))
    by_id = {
        token_id: bytes(byte_decoder[c] for c in token)
        for token, token_id in gpt2.items()
        if token_id < N_BASE_TOKENS
    }
    by_id.update({token_id: token.encode() for token, token_id in ADDED_TOKENS.items()})
    placeholders = [i for i in range(n_rows) if i not in by_id]
    by_id.update(
        {token_id: f"<|extratoken_{n}|>".encode() for n, token_id in enumerate(placeholders, 1)}
    )
    return [by_id[i] for i in range(n_rows)]


def expected_file(folder: Path, ftype: int) -> bytes:
    """ggml's converter rules applied to what transformers loads from ``folder``."""
    model = GPTJForCausalLM.from_pretrained(folder, dtype=torch.float32)
    config = model.config
    state = model.state_dict()
    n_rows = state["transformer.wte.weight"].shape[0]
    n_rot = config.rotary_dim or config.n_embd // config.n_head
    parts = [
        struct.pack(
            "<I7i",
            0x67676D6C,
            n_rows,
            config.n_positions,
            config.n_embd,
            config.n_head,
            config.n_layer,
            n_rot,
            ftype,
        )
    ]
    vocab = expected_vocab(n_rows)
    parts.append(struct.pack("<i", len(vocab)))
    for token in vocab:
        parts += [struct.pack("<I", len(token)), token]
    for name, tensor in state.items():
        if name.endswith("attn.masked_bias") or name.endswith(".attn.bias"):
            continue
        data = tensor.squeeze().numpy()
        as_f16 = ftype == 1 and name.endswith(".weight") and data.ndim == 2
        data = data.astype(np.float16 if as_f16 else np.float32)
        encoded = name.encode()
        parts.append(
            struct.pack(
                f"<3i{data.ndim}i", data.ndim, len(encoded), int(as_f16), *reversed(data.shape)
            )
        )
        parts += [encoded, data.tobytes()]
    return b"".join(parts)


def main() -> None:
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    expected = {
        "description": "Sizes and sha256 of the ggml files each folder must convert to "
        "(see scripts/make_convert_fixtures.py).",
        "torch": torch.__version__,
        "folders": {},
    }
    for seed, (name, config_values, n_rows, containers) in enumerate(MODELS, start=100):
        model = make_model(config_values, n_rows, seed)
        for container in containers:
            folder = OUT / f"{name}-{container}"
            save_container(model, folder, container, extra_buffers=name.endswith("padded"))
            entry = {
                "n_rows": n_rows,
                "n_tokens": N_BASE_TOKENS + len(ADDED_TOKENS),
                "source_dtype": {"bf16": "bfloat16", "f32": "float32"}.get(container, "float16"),
            }
            for ftype, outtype in ((0, "f32"), (1, "f16")):
                data = expected_file(folder, ftype)
                entry[outtype] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
            expected["folders"][folder.name] = entry
    (OUT / "expected.json").write_text(json.dumps(expected, indent=2) + "\n")
    total = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
    print(f"wrote {len(expected['folders'])} folders, {total} bytes")


if __name__ == "__main__":
    main()
