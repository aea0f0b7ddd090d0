"""Small valid inputs of every format, for the fuzzers to mutate.

Checkpoints come from the real ``torch.save``/safetensors fixtures; model files are the small
Hugging Face fixture converted by ggml-py (a seed only has to be valid, the fuzz tests compare
nothing against it); the tokenizer folder is that fixture's vocabulary with merges derived from
it and GPT-J's special-token files.
"""

from __future__ import annotations

import json
import tempfile
import warnings
import zipfile
from pathlib import Path

from ggml_py.convert import convert_hf
from ggml_py.formats.quant import GGMLFileType
from ggml_py.tokenizer import bytes_to_token, derive_merges, token_to_bytes

REPO = Path(__file__).resolve().parents[2]
CHECKPOINTS = REPO / "tests" / "fixtures" / "checkpoints"
SMALL_HF = (
    REPO / "tests" / "fixtures" / "convert" / "e32-h4-l2-safetensors"
)  # 300 tokens, 2 layers of 32
TINY_GPTJ = REPO / "examples" / "tiny-gptj"

CHECKPOINT_FILES = (
    "dtypes.pt",
    "views.pt",
    "compressed.pt",
    "legacy.pt",
    "big_endian.pt",
    "untyped_v3.pt",
    "parameters.pt",
    "dtypes.safetensors",
)
ZIP_CHECKPOINT_FILES = (
    "dtypes.pt",
    "views.pt",
    "untyped_v3.pt",
    "parameters.pt",
    "state_dict_metadata.pt",
)


def checkpoint_seeds() -> dict[str, bytes]:
    """File name -> bytes of torch zip, legacy and safetensors checkpoints (2 to 5 KB each)."""
    return {name: (CHECKPOINTS / name).read_bytes() for name in CHECKPOINT_FILES}


def pickle_seeds() -> dict[str, bytes]:
    """The ``data.pkl`` of each torch zip checkpoint."""
    seeds = {}
    for name in ZIP_CHECKPOINT_FILES:
        with zipfile.ZipFile(CHECKPOINTS / name) as archive:
            pickle_name = next(entry for entry in archive.namelist() if entry.endswith("/data.pkl"))
            seeds[name] = archive.read(pickle_name)
    return seeds


def model_seeds() -> dict[str, bytes]:
    """File name -> bytes of ggml and GGUF GPT-J files (f16 and q4_0, 25 to 70 KB each)."""
    seeds = {}
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        warnings.simplefilter(
            "ignore"
        )  # no merges.txt in the fixture: GGUF derives them, with a warning
        for file_format, suffix in (("ggml", ".bin"), ("gguf", ".gguf")):
            for file_type in (GGMLFileType.MOSTLY_F16, GGMLFileType.MOSTLY_Q4_0):
                name = f"{file_type.short_name}{suffix}"
                convert_hf(SMALL_HF, file_type, Path(folder) / name, file_format=file_format)
                seeds[name] = (Path(folder) / name).read_bytes()
    return seeds


def tokenizer_seed() -> dict[str, bytes]:
    """A Hugging Face tokenizer folder as file name -> bytes (about 6 KB)."""
    token_ids = json.loads((SMALL_HF / "vocab.json").read_bytes())
    vocab = [token_to_bytes(token) for token in sorted(token_ids, key=token_ids.__getitem__)]
    merges = "".join(
        f"{bytes_to_token(left)} {bytes_to_token(right)}\n" for left, right in derive_merges(vocab)
    )
    files = {name: (SMALL_HF / name).read_bytes() for name in ("vocab.json", "added_tokens.json")}
    files["merges.txt"] = ("#version: 0.2\n" + merges).encode()
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        files[name] = (TINY_GPTJ / name).read_bytes()
    return files
