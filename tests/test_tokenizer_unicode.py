"""The pre-tokenizer's character classes against Hugging Face, for every code point.

``char_classes.json`` records how Hugging Face's ByteLevel pre-tokenizer classified each code
point (written by scripts/make_tokenizer_corpus.py); ggml_py/_tokenizer_unicode.py was generated
independently from the Unicode 16.0 character database.
"""

from __future__ import annotations

import json
import re
from itertools import pairwise
from pathlib import Path

import pytest

from ggml_py import _tokenizer_unicode as classes
from ggml_py.tokenizer import pretokenize

CLASS_RUNS = json.loads(
    (Path(__file__).parent / "fixtures" / "tokenizer" / "char_classes.json").read_text()
)
END = 0x110000
SURROGATES = range(0xD800, 0xE000)


def position(code_point: int) -> int:
    """Index of a code point in the string of all code points without the surrogates."""
    return code_point - len(SURROGATES) if code_point >= SURROGATES.stop else code_point


EVERYTHING = "".join(map(chr, range(SURROGATES.start))) + "".join(
    map(chr, range(SURROGATES.stop, END))
)


def hugging_face_spans(name: str) -> list:
    """[start, end) spans of EVERYTHING that Hugging Face puts in class ``name``."""
    return [
        (position(first), position(following))
        for (first, run_class), (following, _) in zip(
            CLASS_RUNS, CLASS_RUNS[1:] + [(END, None)], strict=True
        )
        if run_class == name
    ]


def matched_spans(class_body: str) -> list:
    return [match.span() for match in re.finditer(f"[{class_body}]+", EVERYTHING)]


@pytest.mark.parametrize(
    "name, class_body",
    [
        ("letter", classes.LETTERS_BMP + classes.LETTERS_ASTRAL),
        ("number", classes.NUMBERS_BMP + classes.NUMBERS_ASTRAL),
        ("whitespace", classes.WHITE_SPACE),
    ],
    ids=["letter", "number", "whitespace"],
)
def test_classes_match_hugging_face_for_every_code_point(name, class_body):
    assert matched_spans(class_body) == hugging_face_spans(name)


PROBES = {"letter": "a", "number": "1", "other": "!", "whitespace": "\t"}


def test_pretokenizer_at_every_class_boundary():
    """The probes the fixture was made with, at the first and last code point of every run."""
    boundaries = [(first, run_class) for first, run_class in CLASS_RUNS]
    boundaries += [
        (following - 1, run_class) for (_, run_class), (following, _) in pairwise(CLASS_RUNS)
    ]
    for code_point, run_class in boundaries:
        if code_point in SURROGATES:
            continue
        for probe_class, probe in PROBES.items():
            pieces = pretokenize(probe + chr(code_point))
            assert (len(pieces) == 1) == (probe_class == run_class), (
                hex(code_point),
                run_class,
                probe_class,
            )
