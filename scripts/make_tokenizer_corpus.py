"""Write the tokenizer's golden data with Hugging Face (run once by hand, output committed).

    /work/venv-gen/bin/python scripts/make_tokenizer_corpus.py

Needs transformers (GPT2TokenizerFast) and tokenizers. Writes into tests/fixtures/tokenizer/:

- ``corpus.jsonl``: one JSON object per line, ``{"text": ..., "ids": [...]}``, the ids being
  GPT2TokenizerFast's encoding of the text with the tokenizer of examples/tiny-gptj (GPT-2's
  vocab.json/merges.txt plus GPT-J's 143 added tokens). Hand-written cases first, then strings
  drawn with a seeded RNG from every category the issue lists.
- ``decode.jsonl``: ``{"ids": [...], "text": ...}``, Hugging Face's ``decode`` of id lists that
  cut characters apart, contain added tokens, or are random.
- ``char_classes.json``: how Hugging Face's pre-tokenizer classifies every code point (letter,
  number, whitespace or other), as runs ``[first_code_point, class]``.
- ``variants/NAME/``: the tokenizer side files (added_tokens.json, tokenizer_config.json,
  special_tokens_map.json) of variants of the tiny-gptj folder, and ``expected.json`` with
  ``len(tokenizer)``, ``eos_token_id`` and the ids of VARIANT_TEXTS for that folder plus GPT-2's
  vocab.json and merges.txt.
- ``versions.json``: the library versions that produced the files.

Everything is deterministic for a given transformers/tokenizers version (seeded RNG, text from
the Python documentation that ships with the interpreter).
"""

from __future__ import annotations

import json
import random
import shutil
import sys
import tempfile
import unicodedata
from pathlib import Path
from pydoc_data.topics import topics

import tokenizers
import transformers
from tokenizers.pre_tokenizers import ByteLevel
from transformers import GPT2TokenizerFast

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from ggml_py._atomic import atomic_output  # noqa: E402

OUTPUT = REPO / "tests" / "fixtures" / "tokenizer"
MODEL = REPO / "examples" / "tiny-gptj"
SEED = 20240611
RANDOM_STRINGS = 2400
DECODE_SAMPLES = 400

# ------------------------------------------------------------------------------ text sources

DOC_PARAGRAPHS = [p for topic in topics.values() for p in topic.split("\n\n") if p.strip()]
PROSE = [" ".join(p.split()) for p in DOC_PARAGRAPHS if not p.startswith(" ") and len(p) > 80]
CODE = [p for p in DOC_PARAGRAPHS if p.startswith("   ") and "\n" in p]

HAND_WRITTEN = [
    "",
    " ",
    "  ",
    "\n",
    "\t",
    "a",
    "Hello World!",
    "Hello, my name is",
    "  hi",
    " hi",
    "hi  ",
    "Hello\n\nworld  ",
    "Hello <|endoftext|>",
    "a<|endoftext|>b",
    "<|endoftext|><|endoftext|>",
    "x <|extratoken_10|> y<|extratoken_1|>0",
    "café naïve 😀",
    "a\u00a0b",
    "indivisibility",
    "reinforcement",
    "numbers 1234567",
    "“quoted”",
    "<|endoftext|>Once upon a time",
    " def fibonacci(n):\n",
    "The capital of France is",
    # contractions in every case, with straight and curly apostrophes
    "it's",
    "IT'S",
    "It'S",
    "we're WE'RE We'Re",
    "I've I'VE",
    "I'm I'M",
    "you'll YOU'LL You'Ll",
    "he'd HE'D",
    "don't DON'T",
    "'s's'S'",
    "''s",
    "'t 're 've 'm 'll 'd",
    "it’s it‘s",
    "rock'n'roll",
    "'tis",
    "' s",
    "'S'T'RE'VE'M'LL'D",
    # whitespace
    "a \t b",
    "a\r\nb\r\n",
    "\r\n\r\n",
    "   \n   \n",
    "\n\n\n\n",
    " \n",
    "\n ",
    "a\n\tb",
    "\t\tindented\n\t\t\tmore",
    "trailing   ",
    "   leading",
    "a" + " " * 40 + "b",
    "\u3000full\u3000width",
    "\u2028line\u2029para",
    "\x0b\x0c\x1c\x1d\x1e\x1f\x85",
    "\u200b zero\u200bwidth",
    "\u180e mongolian",
    "\ufeffbom",
    "\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a",
    "\u202f\u205f\u1680",
    "a\u00a0\u00a0b",
    " \u00a0x",
    # numbers
    "3.14159",
    "-0.5e-10",
    "1,000,000",
    "10/10/2020",
    "v1.2.3",
    "0x1F",
    "123456789012345678901234567890",
    "١٢٣ ४५६ ３４５ ²³ ½ Ⅻ ⑩",
    "$19.99",
    "25.5°C",
    "50%",
    # punctuation and symbols
    "...",
    "?!?!",
    "!!!111",
    "--->",
    "<=>",
    "@#$%^&*()",
    "{[()]}",
    ":-)",
    "¯\\_(ツ)_/¯",
    "«»¿¡—–…•·",
    # URLs and code
    "https://www.example.com/path?query=1&b=2#frag",
    "mailto:someone@example.org",
    "C:\\Users\\me\\file.txt",
    "def f(x):\n    return x ** 2\n",
    "for (int i = 0; i < n; i++) {\n\tsum += a[i];\n}",
    "if x:\r\n    y = 1\r\n",
    "#include <stdio.h>",
    "SELECT * FROM t WHERE a='b';",
    # emoji
    "👨‍👩‍👧‍👦",
    "👍🏽",
    "🇫🇷🇯🇵",
    "1️⃣",
    "❤️",
    "🏳️‍🌈",
    "🤷‍♂️",
    "😀😃😄",
    "a😀b",
    # scripts
    "日本語のテキスト",
    "中文文本",
    "한국어 텍스트",
    "مرحبا بالعالم",
    "नमस्ते दुनिया",
    "Привет мир",
    "Γειά σου Κόσμε",
    "שלום עולם",
    "สวัสดีชาวโลก",
    "ሰላም ዓለም",
    # combining marks
    unicodedata.normalize("NFC", "Crème brûlée à la mode"),
    unicodedata.normalize("NFD", "Crème brûlée à la mode"),
    "e\u0301",
    "a\u0300\u0301\u0302\u0303",
    "Z\u0351\u0352\u0353\u0354a\u0355\u0356l\u0357g\u0358o",
    # non-BMP
    "𝐇𝐞𝐥𝐥𝐨",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
    "𠜎𠜱𠝹",
    "𐍈𐌰𐌹",
    "𓀀𓀁",
    "\U0010fffd",
    "\U000e0001",
    # characters whose class depends on the Unicode version (assigned in Unicode 16.0 and 17.0)
    "\u0558\u0559 \u1c89\u1c8a \U000105c0\U000105c1\U000105c2 \U00010940\U00010941 \U00011de0\U00011de1",
    "a\U000105c0b 1\U00011de02 \u088f\U0001246f",
    # control characters
    "".join(map(chr, range(32))),
    "".join(map(chr, range(127, 160))),
    "a\x00b",
    "\x7f",
    "\x1b[31mred\x1b[0m",
    # added tokens: inside words, next to spaces, adjacent, partial and wrongly cased
    "word<|endoftext|>word",
    " <|endoftext|> ",
    "\n<|endoftext|>\n",
    "<|endoftext|",
    "|endoftext|>",
    "<<|endoftext|>>",
    "<|<|endoftext|>|>",
    "<|ENDOFTEXT|>",
    "<|extratoken_0|>",
    "<|extratoken_143|>",
    "<|extratoken_144|>",
    "<|extratoken_1|><|extratoken_14|><|extratoken_143|>",
    "<|extratoken_1|>43|>",
    "<|extratoken_|>",
    "<| endoftext |>",
    "a <|extratoken_99|>b",
    "'s<|endoftext|>'s",
    # contractions that are only case-sensitive because of the letter after them
    "'Sam 'Tom 'Reggie 'Vera 'Mark 'Lloyd 'Dave",
    "I'Ve WE'Re 'TIS 'DAVE",
    "'sam 'tom 'reggie",
    # runs where the same pair can merge at several places (leftmost first)
    "aaa",
    "aaaaa",
    "zzzzzzz",
    "=====",
    "-----",
    "^^^",
    "mmm hmm",
    " ooooo",
    "\n\n\n\n\n",
    "     ",
]


def random_case(rng: random.Random, text: str) -> str:
    return "".join(char.upper() if rng.random() < 0.5 else char.lower() for char in text)


def prose(rng: random.Random) -> str:
    paragraph = rng.choice(PROSE)
    start = rng.randrange(len(paragraph))
    return paragraph[start : start + rng.randrange(20, 400)]


def code(rng: random.Random) -> str:
    block = rng.choice(CODE)
    if rng.random() < 0.3:
        block = block.replace("    ", "\t")
    if rng.random() < 0.2:
        block = block.replace("\n", "\r\n")
    return block[: rng.randrange(20, 600)]


def whitespace(rng: random.Random) -> str:
    pieces = [
        " ",
        "  ",
        "\t",
        "\n",
        "\r\n",
        "\u00a0",
        "\u3000",
        "\u2028",
        "\x0b",
        "\x0c",
        "\x1c",
        "\x85",
        "\u200b",
        "\u2009",
        "\u202f",
        "\ufeff",
        "\r",
    ]
    return "".join(
        rng.choice(pieces + ["x", "word", "1", ".", "'s"]) for _ in range(rng.randrange(1, 16))
    )


def contractions(rng: random.Random) -> str:
    words = ["it", "you", "they", "I", "we", "don", "can", "won", "she", "he", "that", "there"]
    suffixes = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "’s", "'", "''", "'x"]
    return " ".join(
        random_case(rng, rng.choice(words) + rng.choice(suffixes))
        for _ in range(rng.randrange(1, 6))
    )


def numbers(rng: random.Random) -> str:
    forms = [
        lambda: str(rng.randrange(10 ** rng.randrange(1, 25))),
        lambda: f"{rng.uniform(-1e6, 1e6):.{rng.randrange(0, 8)}f}",
        lambda: f"{rng.uniform(0, 1):e}",
        lambda: f"{rng.randrange(10**9):,}",
        lambda: "".join(
            rng.choice("0123456789٠١٢٣४५६３４½²Ⅻ⑩") for _ in range(rng.randrange(1, 9))
        ),
    ]
    return rng.choice([" ", "", ", ", "\n"]).join(
        rng.choice(forms)() for _ in range(rng.randrange(1, 5))
    )


def punctuation(rng: random.Random) -> str:
    symbols = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~“”‘’—–…«»¿¡·•°§¶©®™€£¥"
    return "".join(rng.choice(symbols + " a1") for _ in range(rng.randrange(1, 20)))


def url(rng: random.Random) -> str:
    def word() -> str:
        return "".join(
            rng.choice("abcdefghijklmnopqrstuvwxyz0123456789-_")
            for _ in range(rng.randrange(1, 10))
        )

    path = "/".join(word() for _ in range(rng.randrange(0, 4)))
    query = "&".join(f"{word()}={word()}" for _ in range(rng.randrange(0, 3)))
    text = f"{rng.choice(['http', 'https', 'ftp'])}://{word()}.{rng.choice(['com', 'org', 'io', 'co.uk'])}/{path}"
    return text + (f"?{query}" if query else "") + rng.choice(["", ".", ")", "#top", " and more"])


def emoji(rng: random.Random) -> str:
    singles = ["😀", "🎉", "🚀", "👍", "🐍", "❤", "✨", "🔥", "🤖", "🧑", "👩", "👨", "👧", "💻"]
    modifiers = ["", "\U0001f3fb", "\U0001f3fd", "\U0001f3ff", "\ufe0f"]
    text = ""
    for _ in range(rng.randrange(1, 6)):
        text += rng.choice(singles) + rng.choice(modifiers)
        if rng.random() < 0.4:
            text += "\u200d" + rng.choice(singles)
        if rng.random() < 0.2:
            text += chr(0x1F1E6 + rng.randrange(26)) + chr(0x1F1E6 + rng.randrange(26))
        text += rng.choice(["", " ", "a"])
    return text


SCRIPT_RANGES = {
    "cjk": (0x4E00, 0x9FFF),
    "hiragana": (0x3041, 0x3096),
    "katakana": (0x30A1, 0x30FA),
    "hangul": (0xAC00, 0xD7A3),
    "arabic": (0x0620, 0x0652),
    "devanagari": (0x0900, 0x097F),
    "cyrillic": (0x0410, 0x044F),
    "greek": (0x0391, 0x03C9),
    "hebrew": (0x05D0, 0x05EA),
    "thai": (0x0E01, 0x0E5B),
}


def script_text(rng: random.Random) -> str:
    low, high = SCRIPT_RANGES[rng.choice(list(SCRIPT_RANGES))]
    words = [
        "".join(chr(rng.randrange(low, high + 1)) for _ in range(rng.randrange(1, 8)))
        for _ in range(rng.randrange(1, 6))
    ]
    return rng.choice([" ", "", "、", "，", ". "]).join(words)


def combining(rng: random.Random) -> str:
    text = prose(rng)[:80] + " " + "".join(rng.choice("àéîõüçñåøÅÉÎÕÜ") for _ in range(5))
    text += "".join(
        rng.choice("aeiou") + chr(rng.randrange(0x300, 0x370)) for _ in range(rng.randrange(1, 5))
    )
    return unicodedata.normalize(rng.choice(["NFC", "NFD", "NFKD"]), text)


def non_bmp(rng: random.Random) -> str:
    blocks = [
        (0x1D400, 0x1D7FF),
        (0x10330, 0x1034A),
        (0x20000, 0x2A6DF),
        (0x13000, 0x1342E),
        (0x1F300, 0x1F64F),
        (0x10000, 0x1007F),
        (0xE0000, 0xE007F),
        (0xF0000, 0x10FFFD),
    ]
    low, high = rng.choice(blocks)
    return "".join(
        chr(rng.randrange(low, high + 1)) if rng.random() < 0.8 else rng.choice(" a1.")
        for _ in range(rng.randrange(1, 12))
    )


def control(rng: random.Random) -> str:
    return "".join(
        chr(rng.choice([*range(0, 32), *range(127, 160)]))
        if rng.random() < 0.6
        else rng.choice(" ab1.")
        for _ in range(rng.randrange(1, 16))
    )


def added_tokens(rng: random.Random) -> str:
    specials = [
        "<|endoftext|>",
        f"<|extratoken_{rng.randrange(1, 144)}|>",
        f"<|extratoken_{rng.randrange(0, 200)}|>",
        "<|endoftext|",
        "<|",
        "|>",
        "<|extratoken_",
    ]
    parts = [
        rng.choice(specials)
        if rng.random() < 0.5
        else rng.choice(["word", " ", "", "x", "\n", "12", "'s", " a "])
        for _ in range(rng.randrange(1, 8))
    ]
    return "".join(parts)


def invalid_utf8(rng: random.Random) -> str:
    data = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 24)))
    if rng.random() < 0.5:
        data = "é€😀".encode()[: rng.randrange(1, 9)] + data
    return data.decode("utf-8", errors="replace")


# Code points whose letter/number class changed with Unicode 16.0 or 17.0 (see char_classes.json).
VERSION_SENSITIVE = [
    0x0558,
    0x1C89,
    0x1C8A,
    0xA7CB,
    0xA7DC,
    *range(0x105C0, 0x105F4),
    *range(0x10940, 0x1095A),
    *range(0x11DB0, 0x11DDC),
    *range(0x11DE0, 0x11DEA),
    *range(0x12550, 0x12560),
    0x088F,
]


def any_code_points(rng: random.Random) -> str:
    def one() -> str:
        roll = rng.random()
        if roll < 0.2:
            return chr(rng.choice(VERSION_SENSITIVE))
        if roll < 0.6:
            code_point = rng.randrange(0x110000)
            return chr(code_point) if not 0xD800 <= code_point < 0xE000 else "\ufffd"
        if roll < 0.9:
            return chr(rng.randrange(0x80, 0x3000))
        return rng.choice(" a1.\n")

    return "".join(one() for _ in range(rng.randrange(1, 16)))


CATEGORIES = [
    prose,
    code,
    whitespace,
    contractions,
    numbers,
    punctuation,
    url,
    emoji,
    script_text,
    combining,
    non_bmp,
    control,
    added_tokens,
    invalid_utf8,
    any_code_points,
]


def random_strings(rng: random.Random, count: int) -> list[str]:
    strings = []
    for index in range(count):
        if index % 4 == 3:  # a mixture of categories
            fragments = [rng.choice(CATEGORIES)(rng) for _ in range(rng.randrange(2, 5))]
            strings.append(
                "".join(fragment + rng.choice(["", " ", "\n", "  "]) for fragment in fragments)
            )
        else:
            strings.append(CATEGORIES[index % len(CATEGORIES)](rng))
    return strings


# ------------------------------------------------------------------------------------ output


def char_classes() -> list[list]:
    """Runs of Hugging Face's pre-tokenizer classes: a character is a letter if "a" + it stays
    one pre-token, a number likewise with "1", other with "!", whitespace with a tab."""
    pre_tokenizer = ByteLevel(add_prefix_space=False, use_regex=True)
    probes = (("a", "letter"), ("1", "number"), ("!", "other"), ("\t", "whitespace"))
    runs: list[list] = []
    for code_point in range(0x110000):
        if 0xD800 <= code_point < 0xE000:
            continue
        char = chr(code_point)
        classes = [
            name for probe, name in probes if len(pre_tokenizer.pre_tokenize_str(probe + char)) == 1
        ]
        if len(classes) != 1:
            sys.exit(f"U+{code_point:04X} is in {classes}, expected exactly one class")
        if not runs or runs[-1][1] != classes[0]:
            runs.append([code_point, classes[0]])
    return runs


GPTJ_ADDED = json.loads((MODEL / "added_tokens.json").read_text())
GPTJ_CONFIG = json.loads((MODEL / "tokenizer_config.json").read_text())
GPTJ_SPECIAL = json.loads((MODEL / "special_tokens_map.json").read_text())

# Variants of the tiny-gptj folder: file name -> content of the tokenizer side files (vocab.json
# and merges.txt always come from tiny-gptj; a side file not listed is absent).
VARIANTS = {
    "vocab_and_merges_only": {},
    # newer transformers list the added tokens in tokenizer_config.json
    "added_tokens_decoder": {
        "tokenizer_config.json": {
            **GPTJ_CONFIG,
            "added_tokens_decoder": {
                str(token_id): {"content": token, "special": False}
                for token, token_id in GPTJ_ADDED.items()
            },
        },
        "special_tokens_map.json": GPTJ_SPECIAL,
    },
    # added tokens that are prefixes of each other (the longest match wins), one already in vocab.json
    "prefix_added_tokens": {
        "added_tokens.json": {
            **GPTJ_ADDED,
            "<|user|>": 50400,
            "<|user|>:": 50401,
            "hello": 50402,
            "hello world": 50403,
        },
        "tokenizer_config.json": GPTJ_CONFIG,
        "special_tokens_map.json": GPTJ_SPECIAL,
    },
    # ids out of order and with a gap: only their order counts
    "added_tokens_out_of_order": {
        "added_tokens.json": {**GPTJ_ADDED, "<|a|>": 50500, "<|b|>": 50400},
        "tokenizer_config.json": GPTJ_CONFIG,
        "special_tokens_map.json": GPTJ_SPECIAL,
    },
    # added_tokens_decoder, when present, replaces added_tokens.json
    "added_tokens_decoder_wins": {
        "added_tokens.json": GPTJ_ADDED,
        "tokenizer_config.json": {
            **GPTJ_CONFIG,
            "added_tokens_decoder": {"50500": {"content": "<|a|>", "special": False}},
        },
        "special_tokens_map.json": GPTJ_SPECIAL,
    },
    # special tokens that are not in the vocabulary get new ids after the added tokens
    "special_tokens_not_in_vocab": {
        "added_tokens.json": GPTJ_ADDED,
        "tokenizer_config.json": GPTJ_CONFIG,
        "special_tokens_map.json": {
            **GPTJ_SPECIAL,
            "pad_token": "<pad>",
            "eos_token": "</s>",
            "additional_special_tokens": ["<x>", "<|extratoken_5|>"],
        },
    },
}
VARIANT_TEXTS = [
    "a<|endoftext|>b",
    "<|endoftext|>",
    "<|extratoken_1|>",
    "x <|extratoken_10|> y<|extratoken_1|>0",
    "Hello, my name is",
    "<|extratoken_143|><|extratoken_144|>",
    "<|user|>: hi",
    "<|user|> hi",
    "say hello world",
    "hello worlds",
    "helloworld",
    " hello",
    "<|user|><|user|>:",
    "hello world<|user|>:hello",
    "<|a|> <|b|>",
    "a<pad></s><x> <|extratoken_5|>",
]


def write_variants(root: Path) -> None:
    """One folder per variant with its side files and expected.json (len, eos id, encodings)."""
    for name, side_files in VARIANTS.items():
        folder = root / name
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        for file_name, content in side_files.items():
            write_json(folder / file_name, content, indent=None)  # one line, like the originals
        with tempfile.TemporaryDirectory() as scratch:
            for file_name in ("vocab.json", "merges.txt", *side_files):
                shutil.copy(
                    MODEL / file_name
                    if file_name in ("vocab.json", "merges.txt")
                    else folder / file_name,
                    Path(scratch) / file_name,
                )
            tokenizer = GPT2TokenizerFast.from_pretrained(scratch)
            expected = {
                "len": len(tokenizer),
                "eos_token_id": tokenizer.eos_token_id,
                "encodings": [
                    {"text": text, "ids": tokenizer.encode(text)} for text in VARIANT_TEXTS
                ],
            }
        write_json(folder / "expected.json", expected)


def write_json(path: Path, value, indent: int | None = 1) -> None:
    with atomic_output(path) as out:
        out.write((json.dumps(value, indent=indent) + "\n").encode())


def write_jsonl(path: Path, rows: list[dict]) -> None:
    with atomic_output(path) as out:
        for row in rows:
            out.write(
                (json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")
            )


def main() -> None:
    rng = random.Random(SEED)
    tokenizer = GPT2TokenizerFast.from_pretrained(MODEL)
    texts = list(dict.fromkeys(HAND_WRITTEN + random_strings(rng, RANDOM_STRINGS)))
    corpus = [{"text": text, "ids": tokenizer.encode(text)} for text in texts]
    for row in corpus:
        if tokenizer.decode(row["ids"]) != row["text"]:
            sys.exit(f"Hugging Face does not round-trip {row['text']!r}")

    decode_rows = []
    for index in range(DECODE_SAMPLES):
        if (
            index % 3 == 0
        ):  # random ids, including added tokens and lone bytes of multi-byte characters
            ids = [
                rng.randrange(len(tokenizer)) if rng.random() < 0.5 else rng.randrange(188, 256)
                for _ in range(rng.randrange(1, 12))
            ]
        else:  # a slice of a real encoding, which may cut a character apart
            source = rng.choice([row["ids"] for row in corpus if len(row["ids"]) > 1])
            start = rng.randrange(len(source))
            ids = source[start : start + rng.randrange(1, 10)]
        decode_rows.append({"ids": ids, "text": tokenizer.decode(ids)})

    OUTPUT.mkdir(parents=True, exist_ok=True)
    write_jsonl(OUTPUT / "corpus.jsonl", corpus)
    write_jsonl(OUTPUT / "decode.jsonl", decode_rows)
    with atomic_output(OUTPUT / "char_classes.json") as out:
        out.write(json.dumps(char_classes(), separators=(",", ":")).encode())
    write_variants(OUTPUT / "variants")
    write_json(
        OUTPUT / "versions.json",
        {
            "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__,
            "python": sys.version.split()[0],
            "seed": SEED,
        },
    )
    print(f"{len(corpus)} strings, {len(decode_rows)} decodings written to {OUTPUT}")


if __name__ == "__main__":
    main()
