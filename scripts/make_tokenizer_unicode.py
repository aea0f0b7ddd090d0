"""Write ggml_py/_tokenizer_unicode.py: the Unicode 16.0 classes of the GPT-2 pre-tokenizer.

Hugging Face ``tokenizers`` (0.23) evaluates ``\\p{L}``, ``\\p{N}`` and ``\\s`` in the GPT-2 pattern
with Oniguruma's Unicode 16.0 tables. The ``regex`` module uses the Unicode version it was built
with, which changes between releases, so ggml-py spells the three classes out as fixed ranges.
The ranges come from the Unicode Character Database 16.0 as packaged by ``unicodedata2==16.0.0``;
``tests/test_tokenizer_unicode.py`` checks them against Hugging Face's behaviour for every code
point (fixture written by ``scripts/make_tokenizer_corpus.py``).

Run by hand:  /work/venv-gen/bin/pip install unicodedata2==16.0.0
              /work/venv-gen/bin/python scripts/make_tokenizer_unicode.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import unicodedata2

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from ggml_py._atomic import atomic_output  # noqa: E402

OUTPUT = REPO / "ggml_py" / "_tokenizer_unicode.py"
SURROGATES = range(0xD800, 0xE000)
LINE_WIDTH = 96
# White_Space property (PropList.txt); unicodedata has no accessor for it, and it has not
# changed since Unicode 6.3.
WHITE_SPACE = frozenset(
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009"
    "\u200a\u2028\u2029\u202f\u205f\u3000"
)


def code_point_ranges(is_member) -> list[tuple[int, int]]:
    """Maximal runs [first, last] of code points (surrogates skipped) for which is_member holds."""
    runs: list[tuple[int, int]] = []
    for code_point in range(0x110000):
        if code_point in SURROGATES or not is_member(chr(code_point)):
            continue
        if runs and runs[-1][1] == code_point - 1:
            runs[-1] = (runs[-1][0], code_point)
        else:
            runs.append((code_point, code_point))
    return runs


def regex_escape(code_point: int) -> str:
    return f"\\u{code_point:04X}" if code_point <= 0xFFFF else f"\\U{code_point:08X}"


def class_body_source(name: str, runs: list[tuple[int, int]]) -> str:
    """``NAME = (r"..." r"...")``: a character-class body, wrapped to LINE_WIDTH."""
    items = [regex_escape(a) if a == b else f"{regex_escape(a)}-{regex_escape(b)}" for a, b in runs]
    lines, line = [], ""
    for item in items:
        if len(line) + len(item) > LINE_WIDTH - 8:
            lines.append(line)
            line = ""
        line += item
    lines.append(line)
    body = "\n".join(f'    r"{text}"' for text in lines)
    return f"{name} = (\n{body}\n)\n"


def main() -> None:
    if unicodedata2.unidata_version != "16.0.0":
        sys.exit(f"need unicodedata2==16.0.0, found Unicode {unicodedata2.unidata_version}")
    letters = code_point_ranges(lambda char: unicodedata2.category(char).startswith("L"))
    numbers = code_point_ranges(lambda char: unicodedata2.category(char).startswith("N"))
    white_space = code_point_ranges(lambda char: char in WHITE_SPACE)
    source = (
        '"""Unicode 16.0 character classes of the GPT-2 pre-tokenizer (generated, do not edit).\n\n'
        "Written by scripts/make_tokenizer_unicode.py from unicodedata2 16.0.0. Each constant is the\n"
        "body of a regex character class: LETTERS is General_Category L*, NUMBERS is N*,\n"
        "WHITE_SPACE the White_Space property (all in the BMP). The _BMP and _ASTRAL halves are\n"
        'kept apart because text without astral characters can use a faster pattern.\n"""\n'
    )
    for name, runs in (("LETTERS", letters), ("NUMBERS", numbers)):
        source += "\n" + class_body_source(f"{name}_BMP", [run for run in runs if run[1] <= 0xFFFF])
        source += "\n" + class_body_source(
            f"{name}_ASTRAL", [run for run in runs if run[0] > 0xFFFF]
        )
    if any(run[1] > 0xFFFF for run in white_space) or any(
        a <= 0xFFFF < b for a, b in letters + numbers
    ):
        sys.exit("a range crosses from the BMP into the astral planes; split it")
    source += "\n" + class_body_source("WHITE_SPACE", white_space)
    with atomic_output(OUTPUT) as out:
        out.write(source.encode("ascii"))
    print(
        f"{OUTPUT}: {len(letters)} letter, {len(numbers)} number, {len(white_space)} space ranges"
    )


if __name__ == "__main__":
    main()
