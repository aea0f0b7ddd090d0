"""Fuzzing campaigns: which inputs go to which target, for hypothesis and for atheris.

A ``Campaign`` has ``draw(data, workdir)``, which draws one input with hypothesis (a mutation of
a seed, or a forged structure) and runs its target; ``run_bytes(raw, workdir)``, which turns the
raw bytes of a coverage-guided fuzzer into the same target's input; and ``seeds()``, the valid
inputs such a fuzzer starts from. ``tests/test_robustness_fuzz.py`` runs each ``draw`` for a
bounded number of examples, ``scripts/fuzz.py`` for as long as asked.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
from hypothesis import strategies as st

from fuzz import mutations, seeds, targets
from ggml_py.tokenizer import Tokenizer


class Campaign(NamedTuple):
    draw: Callable[[st.DataObject, Path], None]
    run_bytes: Callable[[bytes, Path], None]
    seeds: Callable[[], dict[str, bytes]]


@functools.cache
def _model_seeds() -> dict[str, bytes]:
    return seeds.model_seeds()


@functools.cache
def gptj_tokenizer() -> Tokenizer:
    """GPT-J's tokenizer (examples/tiny-gptj): 50400 ids, merges and added tokens."""
    return Tokenizer.from_pretrained(seeds.TINY_GPTJ)


def _suffix(raw: bytes) -> str:
    return ".gguf" if raw.startswith(b"GGUF") else ".bin"


MODEL_MAGICS = (b"lmgg", b"GGUF\x03\x00\x00\x00", b"GGUF\x02\x00\x00\x00")


def _draw_model(data: st.DataObject, workdir: Path) -> None:
    if data.draw(st.integers(0, 7), label="random bytes after a magic") == 0:
        raw = data.draw(st.sampled_from(MODEL_MAGICS)) + data.draw(st.binary(max_size=200))
    else:
        name = data.draw(st.sampled_from(sorted(_model_seeds())), label="seed")
        raw = data.draw(mutations.damaged(_model_seeds()[name]), label="mutant")
    targets.model_file(raw, workdir, _suffix(raw))


def _draw_zip(data: st.DataObject, workdir: Path) -> None:
    name = data.draw(
        st.sampled_from(["dtypes.pt", "views.pt", "compressed.pt", "big_endian.pt"]), label="seed"
    )
    targets.checkpoint_file(
        data.draw(mutations.forged_zip(seeds.checkpoint_seeds()[name]), label="mutant"), workdir
    )


def _draw_checkpoint(data: st.DataObject, workdir: Path) -> None:
    checkpoints = seeds.checkpoint_seeds()
    name = data.draw(st.sampled_from(sorted(checkpoints)), label="seed")
    targets.checkpoint_file(
        data.draw(mutations.damaged(checkpoints[name]), label="mutant"), workdir, Path(name).suffix
    )


def _draw_pickle(data: st.DataObject, workdir: Path) -> None:
    if data.draw(st.booleans(), label="forged stream"):
        stream = data.draw(mutations.pickle_streams(), label="stream")
    else:
        pickles = seeds.pickle_seeds()
        stream = data.draw(
            mutations.damaged(pickles[data.draw(st.sampled_from(sorted(pickles)))]), label="mutant"
        )
    targets.pickle_stream(stream)


def _draw_safetensors(data: st.DataObject, workdir: Path) -> None:
    targets.checkpoint_file(
        data.draw(mutations.safetensors_files(), label="file"), workdir, ".safetensors"
    )


def _draw_tokenizer(data: st.DataObject, workdir: Path) -> None:
    targets.tokenizer_folder(
        data.draw(mutations.tokenizer_folders(seeds.tokenizer_seed()), label="files"), workdir
    )


def _tokenizer_bytes(raw: bytes, workdir: Path) -> None:
    # The first byte picks the file that the rest replaces.
    files = seeds.tokenizer_seed()
    if raw:
        files[targets.TOKENIZER_FILES[raw[0] % len(targets.TOKENIZER_FILES)]] = raw[1:]
    targets.tokenizer_folder(files, workdir)


ADDED_TOKEN_PIECES = st.sampled_from(
    ["<|endoftext|>", "<|extratoken_1|>", "<|extratoken_143|>", "<|endo", "|>", "<|", " ", "\n"]
)


def _draw_text(data: st.DataObject, workdir: Path) -> None:
    # st.characters() includes lone surrogates, which have no UTF-8 form: a TokenizerError
    pieces = data.draw(
        st.lists(st.one_of(st.text(st.characters(), max_size=20), ADDED_TOKEN_PIECES), max_size=8)
    )
    targets.encode_text(gptj_tokenizer(), "".join(pieces))


def _draw_ids(data: st.DataObject, workdir: Path) -> None:
    ids = st.one_of(
        st.integers(0, 50399),
        st.integers(-(2**64), 2**64),
        st.sampled_from([50256, 50399, 50400, -1]),
    )
    targets.decode_ids(gptj_tokenizer(), data.draw(st.lists(ids, max_size=30), label="ids"))


def _ids_bytes(raw: bytes, workdir: Path) -> None:
    ids: list[int] = np.frombuffer(raw[: len(raw) // 4 * 4], dtype="<i4").tolist()
    targets.decode_ids(gptj_tokenizer(), ids)


def _files(folder: Path, names) -> Callable[[], dict[str, bytes]]:
    return lambda: {name: (folder / name).read_bytes() for name in names}


CAMPAIGNS: dict[str, Campaign] = {
    "model": Campaign(
        _draw_model,
        lambda raw, workdir: targets.model_file(raw, workdir, _suffix(raw)),
        _model_seeds,
    ),
    "zip": Campaign(
        _draw_zip,
        targets.checkpoint_file,
        _files(seeds.CHECKPOINTS, ["dtypes.pt", "views.pt", "compressed.pt"]),
    ),
    "checkpoint": Campaign(_draw_checkpoint, targets.checkpoint_file, seeds.checkpoint_seeds),
    "pickle": Campaign(
        _draw_pickle, lambda raw, workdir: targets.pickle_stream(raw), seeds.pickle_seeds
    ),
    "safetensors": Campaign(
        _draw_safetensors,
        lambda raw, workdir: targets.checkpoint_file(raw, workdir, ".safetensors"),
        _files(seeds.CHECKPOINTS, ["dtypes.safetensors"]),
    ),
    "tokenizer": Campaign(
        _draw_tokenizer,
        _tokenizer_bytes,
        lambda: {
            f"{index}-{name}": bytes([index]) + content
            for index, (name, content) in enumerate(seeds.tokenizer_seed().items())
        },
    ),
    "text": Campaign(
        _draw_text,
        lambda raw, workdir: targets.encode_text(
            gptj_tokenizer(), raw.decode("utf-8", "surrogateescape")
        ),
        lambda: {"sample": targets.SAMPLE_TEXT.encode()},
    ),
    "ids": Campaign(
        _draw_ids,
        _ids_bytes,
        lambda: {"sample": np.array(gptj_tokenizer().encode(targets.SAMPLE_TEXT), "<i4").tobytes()},
    ),
}
