"""Make the golden data of the conformance suite: ggml_py/conformance/data/.

Run by hand with torch, transformers and gguf-py (the generator environment)::

    /work/venv-torch/bin/python -m pip install --no-deps --target /tmp/gguf-py gguf==0.19.0
    PYTHONPATH=/tmp/gguf-py /work/venv-torch/bin/python scripts/make_conformance_fixtures.py

A small random GPT-J (vocabulary of 500 tokens, 288 positions, 2 layers, n_embd 64, 4 heads,
rotary_dim 8) is made by transformers' ``GPTJForCausalLM``, its weights rounded to float16, and
converted by ggml-py's converter to legacy ggml files of every type (f32, f16, q8_0, q5_1, q5_0,
q4_1, q4_0; the converter writes ggml's bytes, which tests/test_convert.py and
tests/test_ggml_quantize.py check against ggml's own tools). Every tensor's bytes are checked here
against gguf-py's quantizers (which reproduce ``gpt-j-quantize``) and against the float16
checkpoint.

The logits are transformers' (float32, eager attention) on the weights each file holds, decoded
by gguf-py: one set for f32 and f16 (their weights are the same values) and one per quantized
type. Prompts are token ids: 5 tokens, 70 tokens (past 64) and 288 tokens (the whole context,
past 256). Logits are kept at every position of the short prompt and at chunk and context
boundaries of the long ones; greedy continuations (24 tokens) of the short prompt, with the
smallest gap between the best and the second-best logit along the way, so that a test can trust
them.
"""

from __future__ import annotations

import json
import sys
import tempfile
from importlib import metadata
from pathlib import Path

import gguf
import gguf.quants
import numpy as np
import torch
import transformers
from transformers import GPTJConfig, GPTJForCausalLM

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ggml_py.convert import convert_hf  # noqa: E402
from ggml_py.formats import open_model  # noqa: E402
from ggml_py.formats.quant import GGMLFileType, GGMLType  # noqa: E402

OUT = REPO / "ggml_py" / "conformance" / "data"
GPT2_VOCAB = REPO / "examples" / "tiny-gptj" / "vocab.json"
CONFIG = dict(vocab_size=500, n_positions=288, n_embd=64, n_head=4, n_layer=2, rotary_dim=8)
FILE_TYPES = ["f32", "f16", "q8_0", "q5_1", "q5_0", "q4_1", "q4_0"]
# the logits of f32 and f16 files are the same: both hold the float16-rounded weights
WEIGHT_SETS = {
    "float": "f32",
    "q8_0": "q8_0",
    "q5_1": "q5_1",
    "q5_0": "q5_0",
    "q4_1": "q4_1",
    "q4_0": "q4_0",
}
PROMPT_LENGTHS = {"p5": 5, "p70": 70, "p288": 288}
# positions kept for each prompt: all of the short one, chunk boundaries (32, 64, 256) and the end
KEPT_POSITIONS = {
    "p5": list(range(5)),
    "p70": [0, 1, 31, 32, 33, 63, 64, 65, 68, 69],
    "p288": [0, 31, 32, 63, 64, 65, 127, 128, 255, 256, 257, 286, 287],
}
N_GREEDY = 24
MIN_GREEDY_GAP = (
    0.01  # well above any tolerance of the suite: a correct backend cannot flip a token
)


def make_model(seed: int) -> GPTJForCausalLM:
    """Random weights in the way of the shared tiny GPT-J: N(0, 0.3) matrices, non-trivial layer
    norms and biases, everything rounded to float16 (the values every file type starts from)."""
    torch.manual_seed(seed)
    config = GPTJConfig(initializer_range=0.3, bos_token_id=0, eos_token_id=0, **CONFIG)
    config._attn_implementation = "eager"
    model = GPTJForCausalLM(config).eval()
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if parameter.ndim == 1:
                base = 1.0 if name.endswith("ln_1.weight") or name.endswith("ln_f.weight") else 0.0
                parameter.copy_(base + 0.1 * torch.randn(parameter.shape, generator=generator))
            parameter.copy_(parameter.half().float())
    return model


def write_hf_folder(model: GPTJForCausalLM, folder: Path) -> None:
    model.config.save_pretrained(folder)
    state = {
        name: tensor.half().contiguous()
        for name, tensor in model.state_dict().items()
        if "attn.bias" not in name
    }
    torch.save(state, folder / "pytorch_model.bin")
    gpt2 = json.loads(GPT2_VOCAB.read_text(encoding="utf-8"))
    vocab = {token: token_id for token, token_id in gpt2.items() if token_id < CONFIG["vocab_size"]}
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")


def decoded_weights(path: Path, reference: dict) -> dict:
    """The file's tensors decoded by gguf-py, after checking their bytes against gguf-py's
    quantizers (or the float16/float32 checkpoint values) of ``reference``."""
    weights = {}
    for name, info in open_model(path).tensors.items():
        values = reference[name]
        if info.type == GGMLType.F32:
            expected = values.astype(np.float32).tobytes()
        elif info.type == GGMLType.F16:
            expected = values.astype(np.float16).tobytes()
        else:
            expected = gguf.quants.quantize(
                values.astype(np.float32), gguf.GGMLQuantizationType(int(info.type))
            ).tobytes()
        raw = np.asarray(info.data)
        if raw.tobytes() != expected:
            raise SystemExit(f"{path.name}: {name} does not hold the reference bytes")
        decoded = gguf.quants.dequantize(raw, gguf.GGMLQuantizationType(int(info.type)))
        weights[name] = torch.from_numpy(
            np.asarray(decoded, dtype=np.float32).reshape(info.shape).copy()
        )
    return weights


def logits_of(model: GPTJForCausalLM, ids: list) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].numpy().astype(np.float32)


def greedy(model: GPTJForCausalLM, prompt: list) -> tuple:
    """24 greedy tokens, recomputing the whole sequence each step, and the smallest gap between
    the best and second-best logit on the way."""
    ids, gap = list(prompt), np.inf
    for _ in range(N_GREEDY):
        last = logits_of(model, ids)[-1]
        best, second = np.sort(last)[-2:][::-1]
        gap = min(gap, float(best - second))
        ids.append(int(np.argmax(last)))
    return ids[len(prompt) :], gap


def main() -> None:
    model = make_model(seed=4321)
    rng = np.random.default_rng(4321)
    prompts = {
        key: rng.integers(0, CONFIG["vocab_size"], n).tolist() for key, n in PROMPT_LENGTHS.items()
    }
    reference = {
        name: tensor.numpy()
        for name, tensor in model.state_dict().items()
        if "attn.bias" not in name
    }

    OUT.mkdir(parents=True, exist_ok=True)
    for made in [*OUT.glob("*.bin"), *OUT.glob("*.npz"), OUT / "expected.json"]:
        made.unlink(missing_ok=True)  # README.md, written by hand, stays
    with tempfile.TemporaryDirectory() as temporary:
        hf_dir = Path(temporary) / "hf"
        hf_dir.mkdir()
        write_hf_folder(model, hf_dir)
        for file_type in FILE_TYPES:
            convert_hf(hf_dir, GGMLFileType.parse(file_type), OUT / f"ggml-model-{file_type}.bin")

    arrays = {f"{key}_ids": np.array(ids, dtype=np.int64) for key, ids in prompts.items()}
    arrays.update(
        {f"{key}_positions": np.array(KEPT_POSITIONS[key], dtype=np.int64) for key in prompts}
    )
    greedy_ids, gaps = {}, {}
    for weight_set, file_type in WEIGHT_SETS.items():
        weights = decoded_weights(OUT / f"ggml-model-{file_type}.bin", reference)
        if weight_set == "float":
            decoded_weights(OUT / "ggml-model-f16.bin", reference)  # bytes checked; same values
        hf = make_model(seed=4321)
        missing, unexpected = hf.load_state_dict(weights, strict=False)
        if unexpected or set(missing) - {name for name, _ in hf.named_buffers()}:
            raise SystemExit(
                f"{weight_set}: the file's tensors do not cover the model: {missing} {unexpected}"
            )
        for key, ids in prompts.items():
            arrays[f"{weight_set}_{key}"] = logits_of(hf, ids)[KEPT_POSITIONS[key]]
        greedy_ids[weight_set], gaps[weight_set] = greedy(hf, prompts["p5"])
        if gaps[weight_set] < MIN_GREEDY_GAP:
            raise SystemExit(
                f"{weight_set}: greedy gap {gaps[weight_set]:.3g} is too small; choose another seed"
            )
    np.savez_compressed(OUT / "hf-logits.npz", **arrays)

    expected = {
        "made_by": f"scripts/make_conformance_fixtures.py: transformers {transformers.__version__}, "
        f"torch {torch.__version__}, gguf-py {metadata.version('gguf')}",
        "config": CONFIG,
        "files": {file_type: f"ggml-model-{file_type}.bin" for file_type in FILE_TYPES},
        "weight_sets": {"float": ["f32", "f16"], **{q: [q] for q in WEIGHT_SETS if q != "float"}},
        "prompts": prompts,
        "greedy": {"prompt": "p5", "ids": greedy_ids, "smallest_gap": gaps},
    }
    (OUT / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")
    total = sum(p.stat().st_size for p in OUT.iterdir())
    print(f"wrote {OUT} ({total} bytes); smallest greedy gaps {gaps}")


if __name__ == "__main__":
    main()
