"""Mutated checkpoints: whatever the bytes, the only exception that escapes is CheckpointError.

Mutations hit whole files (zip directory, local headers, legacy blobs, safetensors headers) and,
because a zip's CRC rejects most changes to data.pkl before the pickle runs, also the pickle
itself re-zipped with a correct CRC. Each file is read by the fuzz target of
tests/fuzz/targets.py, which also bounds its time and memory (tests/test_robustness_fuzz.py has
the other campaigns).
"""

from __future__ import annotations

import tempfile
import zipfile
from pathlib import Path

from conftest import REPO
from fuzz import targets
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

FIXTURES = REPO / "tests" / "fixtures" / "checkpoints"
FILES = [
    "dtypes.pt",
    "views.pt",
    "compressed.pt",
    "legacy.pt",
    "big_endian.pt",
    "dtypes.safetensors",
]
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def read_everything(data: bytes, suffix: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        targets.checkpoint_file(data, Path(folder), suffix)


def mutate(data: bytes, edits, cut) -> bytes:
    mutant = bytearray(data)
    for position, value in edits:
        mutant[position % len(mutant)] = value
    return bytes(mutant[: len(mutant) - cut])


EDITS = st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)), min_size=1, max_size=6)


@FUZZ
@given(name=st.sampled_from(FILES), edits=EDITS, cut=st.sampled_from([0, 0, 0, 1, 7, 100]))
def test_mutated_files_raise_only_checkpoint_errors(name, edits, cut):
    read_everything(mutate((FIXTURES / name).read_bytes(), edits, cut), Path(name).suffix)


@FUZZ
@given(name=st.sampled_from(["dtypes.safetensors"]), edits=EDITS)
def test_mutated_safetensors_headers_raise_only_checkpoint_errors(name, edits):
    data = (FIXTURES / name).read_bytes()
    header_end = 8 + int.from_bytes(data[:8], "little")
    header_edits = [(8 + position % (header_end - 8), value) for position, value in edits]
    read_everything(mutate(data, header_edits, 0), ".safetensors")


def rezipped_with_mutated_pickle(name: str, edits, cut) -> bytes:
    source = FIXTURES / name
    with tempfile.TemporaryDirectory() as folder:
        target = Path(folder) / name
        with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
            for info in old.infolist():
                data = old.read(info)
                new.writestr(
                    info.filename,
                    mutate(data, edits, cut) if info.filename.endswith("/data.pkl") else data,
                )
        return target.read_bytes()


@FUZZ
@given(
    name=st.sampled_from(["views.pt", "parameters.pt", "state_dict_metadata.pt"]),
    edits=EDITS,
    cut=st.sampled_from([0, 0, 1, 5]),
)
def test_mutated_pickles_raise_only_checkpoint_errors(name, edits, cut):
    read_everything(rezipped_with_mutated_pickle(name, edits, cut), ".pt")
