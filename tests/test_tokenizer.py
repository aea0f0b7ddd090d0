"""Byte-level BPE against Hugging Face: ids, decoding, streaming, added tokens, file errors.

Golden data: ``tests/fixtures/tokenizer/*.jsonl`` (GPT2TokenizerFast, written by
scripts/make_tokenizer_corpus.py), ggml's ``gpt-j.txt`` test vectors and ggml's converted model
file in ``../shared/peer``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ggml_py
from ggml_py import tokenizer as tokenizer_module
from ggml_py.errors import TokenizerError
from ggml_py.formats import open_model
from ggml_py.tokenizer import Tokenizer, bytes_to_token, escape_token, token_to_bytes

FIXTURES = Path(__file__).parent / "fixtures" / "tokenizer"
GPTJ_VOCAB_SIZE = 50400
ENDOFTEXT_ID = 50256


def read_jsonl(path: Path) -> list:
    with open(path, encoding="utf-8") as file:
        return [json.loads(line) for line in file]


CORPUS = read_jsonl(FIXTURES / "corpus.jsonl")
DECODINGS = read_jsonl(FIXTURES / "decode.jsonl")


@pytest.fixture(scope="module")
def pretrained(tiny_model_dir) -> Tokenizer:
    return Tokenizer.from_pretrained(tiny_model_dir)


def hf_token_list(folder: Path) -> list:
    """id -> bytes for vocab.json plus added_tokens.json, as a model file would store them."""
    entries = {
        **json.loads((folder / "vocab.json").read_text()),
        **json.loads((folder / "added_tokens.json").read_text()),
    }
    tokens = [b""] * (max(entries.values()) + 1)
    for token, token_id in entries.items():
        tokens[token_id] = token_to_bytes(token)
    return tokens


@pytest.fixture(scope="module")
def from_vocab(tiny_model_dir) -> Tokenizer:
    return Tokenizer.from_vocab(hf_token_list(tiny_model_dir))


@pytest.fixture(scope="module")
def from_model_file(peer) -> Tokenizer:
    return Tokenizer.from_model(open_model(peer / "tiny-gptj" / "ggml-model-f16.bin"))


@pytest.fixture(scope="module")
def from_gguf_file(tiny_model_dir, tmp_path_factory) -> Tokenizer:
    """A GGUF file carries merges.txt, so this is merges mode read from a model file."""
    from ggml_py.convert import convert_hf
    from ggml_py.formats.quant import GGMLFileType

    path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    convert_hf(tiny_model_dir, GGMLFileType.ALL_F32, path, file_format="gguf")
    return Tokenizer.from_model(open_model(path))


@pytest.fixture(params=["pretrained", "from_vocab", "from_model_file", "from_gguf_file"])
def any_tokenizer(request) -> Tokenizer:
    """The ways of building GPT-J's tokenizer; all must give Hugging Face's ids."""
    return request.getfixturevalue(request.param)


# --------------------------------------------------------------------------- byte alphabet


def test_byte_alphabet_matches_ggml_converter(peer, tiny_model_dir):
    """ggml's converter wrote each vocab.json token's bytes into the model file."""
    vocab = json.loads((tiny_model_dir / "vocab.json").read_text())
    stored = open_model(peer / "tiny-gptj" / "ggml-model-f16.bin").vocab
    assert [token_to_bytes(token) for token in vocab] == stored[: len(vocab)]
    assert [bytes_to_token(data) for data in stored[: len(vocab)]] == list(vocab)


def test_byte_alphabet_examples():
    assert bytes_to_token(b" \n\t\x7f\xa0\xad!~") == "ĠĊĉġłŃ!~"
    assert token_to_bytes("ĠĊĉġłŃ!~") == b" \n\t\x7f\xa0\xad!~"
    assert len({bytes_to_token(bytes([byte])) for byte in range(256)}) == 256


@pytest.mark.parametrize("token", ["a b", "日", "\n", "Ġ\u0144"])
def test_token_to_bytes_rejects_characters_outside_the_alphabet(token):
    with pytest.raises(TokenizerError, match="outside the byte-level alphabet"):
        token_to_bytes(token)


# ------------------------------------------------------------------------------ exactness


def test_ggml_test_vectors(any_tokenizer, peer):
    lines = (peer / "tokenizer" / "gpt-j.txt").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 100
    for line in lines:
        text, ids = line.rsplit(" => ", 1)
        assert any_tokenizer.encode(text) == [int(token_id) for token_id in ids.split(",")], text


def test_corpus_covers_the_issue():
    texts = [row["text"] for row in CORPUS]
    assert len(texts) >= 2000
    for needle in [
        "\r\n",
        "\t",
        "'S",
        "'LL",
        "😀",
        "\u200d",
        "日",
        "ع",
        "न",
        "\u0301",
        "\U0001d407",
        "\x00",
        "\ufffd",
        "<|endoftext|>",
        "<|extratoken_",
        "https://",
        "3.14",
    ]:
        assert any(needle in text for text in texts), needle


def test_corpus_ids_match_hugging_face(any_tokenizer):
    mismatches = [row["text"] for row in CORPUS if any_tokenizer.encode(row["text"]) != row["ids"]]
    assert mismatches == []


def test_reference_examples(pretrained):
    # tokenizer.md section 6: Hugging Face's ids for added tokens, spaces and multi-byte text
    assert pretrained.encode("x <|extratoken_10|> y<|extratoken_1|>0") == [
        87,
        220,
        50266,
        331,
        50257,
        15,
    ]
    assert pretrained.encode("Hello <|endoftext|>") == [15496, 220, 50256]
    assert pretrained.encode("café naïve 😀") == [66, 1878, 2634, 41492, 30325, 222]


def test_gptj_sizes_and_eos(any_tokenizer):
    assert any_tokenizer.vocab_size == GPTJ_VOCAB_SIZE
    assert any_tokenizer.eos_id == ENDOFTEXT_ID
    assert any_tokenizer.token_bytes(ENDOFTEXT_ID) == b"<|endoftext|>"
    assert any_tokenizer.token_bytes(50399) == b"<|extratoken_143|>"


def test_every_added_token_is_one_id(any_tokenizer):
    for token_id in range(ENDOFTEXT_ID, GPTJ_VOCAB_SIZE):
        assert any_tokenizer.encode(any_tokenizer.decode([token_id])) == [token_id]


def test_from_vocab_with_explicit_added_tokens(tiny_model_dir):
    tokens = hf_token_list(tiny_model_dir)
    only_eos = Tokenizer.from_vocab(tokens, added_token_ids=[ENDOFTEXT_ID])
    assert only_eos.encode("<|endoftext|>") == [ENDOFTEXT_ID]
    # not an added token any more, so spelled out by BPE like the OpenAI encoder does
    assert only_eos.encode("<|extratoken_1|>") == Tokenizer.from_vocab(
        tokens[:ENDOFTEXT_ID]
    ).encode("<|extratoken_1|>")
    assert len(only_eos.encode("<|extratoken_1|>")) > 1


def test_small_pretoken_cache_gives_the_same_ids(tiny_model_dir, monkeypatch):
    monkeypatch.setattr(tokenizer_module, "_CACHE_LIMIT", 8)
    tokenizer = Tokenizer.from_pretrained(tiny_model_dir)
    for row in CORPUS[:300]:
        assert tokenizer.encode(row["text"]) == row["ids"]
    assert len(tokenizer._cache) <= 8


# -------------------------------------------------------------------------------- decoding


def test_decode_matches_hugging_face(any_tokenizer):
    for row in DECODINGS:
        assert any_tokenizer.decode(row["ids"]) == row["text"], row["ids"]


def test_stream_decoder_matches_hugging_face(pretrained):
    for row in DECODINGS:
        stream = pretrained.stream_decoder()
        pieces = [stream.feed(token_id) for token_id in row["ids"]]
        assert "".join(pieces) + stream.finish() == row["text"], row["ids"]


def test_stream_decoder_holds_back_partial_characters(pretrained):
    # "’" (U+2019) is tokens 447 (bytes e2 80) and 247 (byte 99)
    stream = pretrained.stream_decoder()
    assert stream.feed(447) == ""
    assert stream.feed(247) == "’"
    assert stream.feed(447) == ""
    assert stream.finish() == "\ufffd"
    assert stream.feed(15496) == "Hello"  # usable again after finish()


def test_decode_round_trips_the_corpus(pretrained):
    for row in CORPUS:
        assert pretrained.decode(row["ids"]) == row["text"]


def test_decode_accepts_numpy_ids(pretrained):
    np = pytest.importorskip("numpy")
    assert pretrained.decode(np.array([15496, 11], dtype=np.int64)) == "Hello,"


@pytest.mark.parametrize("token_id", [-1, GPTJ_VOCAB_SIZE, 10**9])
def test_unknown_token_id_is_an_error(pretrained, token_id):
    with pytest.raises(TokenizerError, match=f"token id {token_id} is not in the vocabulary"):
        pretrained.decode([15496, token_id])


def test_escape_token_is_readable_and_unambiguous():
    assert escape_token(b" Hello") == "' Hello'"
    assert escape_token(b"\xe2\x80") == "'\\xe2\\x80'"
    assert escape_token("\x9c".encode()) == "'\\u009c'"
    assert escape_token(b"\\'\t") == "'\\\\\\'\\t'"


# --------------------------------------------------------------------- properties (hypothesis)

ADDED_FRAGMENTS = [
    "<|endoftext|>",
    "<|extratoken_1|>",
    "<|extratoken_14|>",
    "<|",
    "|>",
    "'s",
    "'S",
    " ",
    "\r\n",
    "\u00a0",
]
texts_with_added_tokens = st.lists(
    st.one_of(st.text(max_size=20), st.sampled_from(ADDED_FRAGMENTS)), max_size=8
).map("".join)


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_decode_inverts_encode(pretrained, text):
    assert pretrained.decode(pretrained.encode(text)) == text


@settings(max_examples=200, deadline=None)
@given(texts_with_added_tokens)
def test_decode_inverts_encode_with_added_tokens(pretrained, text):
    ids = pretrained.encode(text)
    assert pretrained.decode(ids) == text
    assert ids.count(ENDOFTEXT_ID) == text.count("<|endoftext|>")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, GPTJ_VOCAB_SIZE - 1), max_size=30))
def test_stream_decoder_equals_decode(pretrained, ids):
    stream = pretrained.stream_decoder()
    pieces = [stream.feed(token_id) for token_id in ids]
    assert "".join(pieces) + stream.finish() == pretrained.decode(ids)


def test_lone_surrogate_is_an_error(pretrained):
    with pytest.raises(TokenizerError, match="lone surrogate at character 2"):
        pretrained.encode("ab\ud800c")


# ---------------------------------------------------------------------------- tokenizer files


@pytest.fixture
def folder_copy(tiny_model_dir, tmp_path) -> Path:
    for name in (
        "vocab.json",
        "merges.txt",
        "added_tokens.json",
        "special_tokens_map.json",
        "tokenizer_config.json",
    ):
        shutil.copy(tiny_model_dir / name, tmp_path / name)
    return tmp_path


VARIANTS = sorted(path.name for path in (FIXTURES / "variants").iterdir())


@pytest.mark.parametrize("variant", VARIANTS)
def test_folder_variants_match_hugging_face(tiny_model_dir, tmp_path, variant):
    """Added and special tokens in other arrangements (scripts/make_tokenizer_corpus.py, VARIANTS)."""
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(tiny_model_dir / name, tmp_path / name)
    for side_file in (FIXTURES / "variants" / variant).iterdir():
        if side_file.name != "expected.json":
            shutil.copy(side_file, tmp_path / side_file.name)
    expected = json.loads((FIXTURES / "variants" / variant / "expected.json").read_text())
    tokenizer = Tokenizer.from_pretrained(tmp_path)
    assert tokenizer.vocab_size == expected["len"]
    assert tokenizer.eos_id == expected["eos_token_id"]
    for row in expected["encodings"]:
        assert tokenizer.encode(row["text"]) == row["ids"], row["text"]


def replace_in(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda f: (f / "vocab.json").unlink(), "no vocab.json"),
        (lambda f: (f / "merges.txt").unlink(), "no merges.txt"),
        (
            lambda f: (f / "vocab.json").write_text("[1, 2]"),
            "vocab.json: expected a JSON object, found list",
        ),
        (lambda f: (f / "vocab.json").write_text('{"a": '), "vocab.json: not valid JSON"),
        (lambda f: (f / "vocab.json").write_bytes(b'{"\xff": 1}'), "vocab.json: not UTF-8 text"),
        (  # json.loads raises RecursionError, not JSONDecodeError
            lambda f: (f / "vocab.json").write_text("[" * 100_000),
            "vocab.json: not valid JSON: nested too deeply for Python's json module$",
        ),
        (  # int() refuses more than 4300 digits with a plain ValueError
            lambda f: replace_in(f / "vocab.json", '"!": 0', '"!": ' + "9" * 5000),
            "vocab.json: not valid JSON: a number of more than 4300 digits$",
        ),
        (
            lambda f: (f / "tokenizer_config.json").write_text('{"a": ' + "[" * 100_000),
            "tokenizer_config.json: not valid JSON: nested too deeply",
        ),
        (lambda f: replace_in(f / "vocab.json", '"!": 0', '"!": -3'), "token '!' has id -3"),
        (  # the message `ggml-py convert` gives for the same file
            lambda f: replace_in(f / "vocab.json", '"!": 0', '"!": 1'),
            """vocab.json: tokens '!' and '"' share id 1$""",
        ),
        (
            lambda f: replace_in(f / "vocab.json", '"!": 0', '"! x": 0'),
            "vocab.json: token '! x' has character ' '",
        ),
        (
            lambda f: replace_in(f / "vocab.json", '"!": 0', '"!~!~!~!~": 0'),
            "no token for byte 0x21",
        ),
        (
            lambda f: replace_in(f / "merges.txt", "\u0120 t\n", "\u0120 t x\n"),
            "merges.txt: line 2: expected two tokens",
        ),
        (
            lambda f: replace_in(f / "merges.txt", "\u0120 t\n", "\n"),
            "merges.txt: line 2: expected two tokens",
        ),
        (
            lambda f: replace_in(f / "merges.txt", "\u0120 t\n", "\u0120 \u0120\n"),
            "merge 0 .* not in the vocabulary",
        ),
        (
            lambda f: replace_in(f / "vocab.json", '"!": 0', '"!": 50257'),
            "vocab.json: ids are not 0..50256, so added token '<|extratoken_1|>' has no free id",
        ),
        (
            lambda f: replace_in(
                f / "tokenizer_config.json",
                '"add_prefix_space"',
                '"added_tokens_decoder": {"x": 1}, "a"',
            ),
            "tokenizer_config.json: added_tokens_decoder entry 'x' is not an id with a token",
        ),
    ],
)
def test_bad_tokenizer_files(folder_copy, damage, message):
    damage(folder_copy)
    with pytest.raises(TokenizerError, match=message) as error:
        Tokenizer.from_pretrained(folder_copy)
    assert "\n" not in str(error.value)


def test_vocabulary_without_every_byte_is_rejected():
    with pytest.raises(TokenizerError, match="no token for byte 0x00"):
        Tokenizer.from_vocab([bytes([byte]) for byte in range(1, 256)])


def test_package_exports_tokenizer():
    assert ggml_py.Tokenizer is Tokenizer
