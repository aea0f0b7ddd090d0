"""GPT-2/GPT-J byte-level BPE, with ids identical to Hugging Face's GPT2TokenizerFast.

Encoding has three steps, each of which exists for a reason:

1. Added tokens (``<|endoftext|>``, GPT-J's ``<|extratoken_N|>``) are cut out of the text first,
   so that they become their own ids instead of being spelled out as ``<``, ``|``, ``endo``, ...
2. The GPT-2 pattern splits the rest into pre-tokens (a word with its leading space, a number,
   a punctuation run, whitespace). Merges never cross a pre-token boundary, which keeps the
   vocabulary from wasting entries on "word + punctuation" combinations, and lets us cache the
   result per pre-token.
3. Each pre-token's UTF-8 bytes are merged pairwise by rank (:func:`bpe`) until no adjacent
   pair can merge; each final part is a token.

Module-level helpers convert between raw bytes and the "byte-level unicode" spelling that
vocab.json, merges.txt and GGUF files use (every byte drawn as one printable character, so a
space is ``Ġ`` and a newline ``Ċ``):

>>> bytes_to_token(b" hello\\n")
'ĠhelloĊ'
>>> token_to_bytes('ĠhelloĊ')
b' hello\\n'

The full algorithm is described in spec/tokenizer.md.
"""

from __future__ import annotations

import codecs
import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Protocol

from ggml_py._json import parse_json
from ggml_py._tokenizer_unicode import (
    LETTERS_ASTRAL,
    LETTERS_BMP,
    NUMBERS_ASTRAL,
    NUMBERS_BMP,
    WHITE_SPACE,
)
from ggml_py.errors import GgmlPyError, TokenizerError


def _byte_to_char_table() -> dict[int, str]:
    """GPT-2's ``bytes_to_unicode``: printable bytes keep their code point, the other 68 bytes
    (controls, space, DEL, NBSP, soft hyphen) are moved, in increasing order, to U+0100 upwards
    so that no token string contains whitespace or control characters."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    table = {byte: chr(byte) for byte in printable}
    next_code_point = 256
    for byte in range(256):
        if byte not in table:
            table[byte] = chr(next_code_point)
            next_code_point += 1
    return table


_BYTE_TO_CHAR: dict[int, str] = _byte_to_char_table()
_CHAR_TO_BYTE: dict[str, int] = {char: byte for byte, char in _BYTE_TO_CHAR.items()}


def bytes_to_token(data: bytes) -> str:
    """Spell raw bytes in the byte-level alphabet used by vocab.json and merges.txt.

    >>> bytes_to_token("é".encode())
    'Ã©'
    """
    return "".join([_BYTE_TO_CHAR[byte] for byte in data])


def token_to_bytes(token_string: str) -> bytes:
    """The raw bytes of a token spelled in the byte-level alphabet.

    Raises ``TokenizerError`` for a character outside the 256-character alphabet (for example a
    literal space, which the alphabet spells ``Ġ``).

    >>> token_to_bytes('Ã©').decode()
    'é'
    """
    try:
        return bytes([_CHAR_TO_BYTE[char] for char in token_string])
    except KeyError as error:
        raise TokenizerError(
            None,
            f"token {token_string!r} has character {error.args[0]!r} outside the byte-level alphabet",
        ) from None


_SHORT_ESCAPES = {"\n": "\\n", "\t": "\\t", "\r": "\\r", "\\": "\\\\", "'": "\\'"}


def escape_token(data: bytes) -> str:
    """A token's bytes as readable text in quotes: UTF-8 where it is valid, escapes elsewhere.

    Spaces stay visible through the quotes. A byte that is not (complete) UTF-8 is shown as
    ``\\xNN``; a character that is not printable (control, format, non-space whitespace) as
    ``\\uNNNN`` or ``\\UNNNNNNNN``, so the two cannot be confused.

    >>> print(escape_token(b" caf\\xc3\\xa9\\n"), escape_token(b"\\xe2\\x80"), escape_token("\\x85".encode()))
    ' café\\n' '\\xe2\\x80' '\\u0085'
    """
    pieces = []
    # surrogateescape turns each undecodable byte into one of U+DC80..U+DCFF
    for char in data.decode("utf-8", errors="surrogateescape"):
        code_point = ord(char)
        if char in _SHORT_ESCAPES:
            pieces.append(_SHORT_ESCAPES[char])
        elif 0xDC80 <= code_point <= 0xDCFF:
            pieces.append(f"\\x{code_point - 0xDC00:02x}")
        elif char.isprintable():
            pieces.append(char)
        else:
            pieces.append(
                f"\\u{code_point:04x}" if code_point <= 0xFFFF else f"\\U{code_point:08x}"
            )
    return "'" + "".join(pieces) + "'"


def _pretoken_pattern(letters: str, numbers: str) -> re.Pattern[str]:
    """GPT-2's pre-tokenizer pattern with \\p{L}, \\p{N} and \\s spelled out as Unicode 16.0 ranges.

    The original is ``'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+``.
    Hugging Face's tokenizers evaluate its classes with Unicode 16.0, whereas the `regex` module
    follows whatever Unicode version it was built with, so a newer `regex` would split newly
    assigned characters differently. With explicit ranges the standard `re` module suffices.
    The contractions are case-sensitive on purpose: GPT-2's authors forgot re.IGNORECASE, and
    every GPT-2 tokenizer since has kept that behaviour.
    """
    return re.compile(
        "'s|'t|'re|'ve|'m|'ll|'d"
        f"| ?[{letters}]+| ?[{numbers}]+| ?[^{WHITE_SPACE}{letters}{numbers}]+"
        # A whitespace run gives its last character to the word that follows ("  hi" -> " ", " hi").
        f"|[{WHITE_SPACE}]+(?![^{WHITE_SPACE}])|[{WHITE_SPACE}]+"
    )


# `re` tests a character against the astral ranges of a class one range at a time, which makes
# the full pattern about six times slower; text without astral characters does not need them.
_PRETOKEN_PATTERN_BMP = _pretoken_pattern(LETTERS_BMP, NUMBERS_BMP)
_PRETOKEN_PATTERN = _pretoken_pattern(LETTERS_BMP + LETTERS_ASTRAL, NUMBERS_BMP + NUMBERS_ASTRAL)
_ASTRAL_CHARACTER = re.compile("[\U00010000-\U0010ffff]")


def pretokenize(text: str) -> list[str]:
    """Split text (without added tokens) into the pieces that BPE encodes independently.

    >>> pretokenize("Hello  world's 3.14!\\n")
    ['Hello', ' ', ' world', "'s", ' 3', '.', '14', '!', '\\n']
    """
    if _ASTRAL_CHARACTER.search(text) is None:
        return _PRETOKEN_PATTERN_BMP.findall(text)
    return _PRETOKEN_PATTERN.findall(text)


# Tokens such as <|endoftext|> and <|extratoken_12|>: what from_vocab treats as added tokens
# when it is given a bare vocabulary (printable ASCII other than "|" between "<|" and "|>").
ADDED_TOKEN_SHAPE = re.compile(rb"<\|[!-{}~]+\|>")

ENDOFTEXT = "<|endoftext|>"

# The rank of a pair that cannot merge: larger than any real rank, so min() skips it.
NO_MERGE = sys.maxsize

# Pre-token cache size; past it the cache starts over (English text needs a few thousand entries,
# the bound only protects memory against endless distinct pre-tokens).
_CACHE_LIMIT = 1 << 16

RankFunction = Callable[[bytes, bytes], int]
_SINGLE_BYTES = [bytes([byte]) for byte in range(256)]


def bpe(piece: bytes, rank: RankFunction) -> list[bytes]:
    """Split ``piece`` into tokens: merge the lowest-ranked adjacent pair until none can merge.

    ``rank(left, right)`` is the merge rank of two adjacent parts (lower merges first), or
    ``NO_MERGE``. Merging one pair at a time, leftmost first among equal ranks, is exactly what
    Hugging Face's tokenizers (and tiktoken) do. The cost grows with the square of the piece's
    length, which is harmless for words but slow for a pre-token of many thousand characters.

    >>> merges = {(b"a", b"b"): 0, (b"ab", b"c"): 1}
    >>> bpe(b"abcab", lambda left, right: merges.get((left, right), NO_MERGE))
    [b'abc', b'ab']
    """
    # Start from single bytes: every byte is a token, so any text can be encoded.
    parts = list(map(_SINGLE_BYTES.__getitem__, piece))
    # pair_ranks[i] is the rank of merging parts[i] with parts[i + 1].
    pair_ranks = list(map(rank, parts, parts[1:]))
    while pair_ranks:
        lowest = min(pair_ranks)
        if lowest == NO_MERGE:  # no adjacent pair forms a token any more
            break
        # The leftmost of equal ranks, as Hugging Face's tokenizers and tiktoken choose.
        i = pair_ranks.index(lowest)
        parts[i : i + 2] = [parts[i] + parts[i + 1]]
        del pair_ranks[i]
        # Only the pairs with the new part as one side have changed.
        if i > 0:
            pair_ranks[i - 1] = rank(parts[i - 1], parts[i])
        if i < len(pair_ranks):
            pair_ranks[i] = rank(parts[i], parts[i + 1])
    return parts


def is_control_token(token: bytes) -> bool:
    """Whether a token has the shape of one matched whole before BPE (``<|endoftext|>``,
    ``<|extratoken_N|>``): ``from_vocab`` takes such tokens as added tokens, and merges never
    build them.

    >>> is_control_token(b"<|endoftext|>"), is_control_token(b"<|end of text|>")
    (True, False)
    """
    return ADDED_TOKEN_SHAPE.fullmatch(token) is not None


def derive_merges(vocab: Sequence[bytes]) -> list[tuple[bytes, bytes]]:
    """BPE merges recovered from a vocabulary whose ids are merge ranks (GPT-2 style).

    The ranked tokens are all non-control tokens, each byte string ranked by its lowest id. For
    every ranked token of two or more bytes, in rank order, rank-by-id BPE runs on its bytes
    with only lower-ranked tokens allowed; if that ends in exactly two parts, they are the merge
    that forms the token. On GPT-2's vocabulary this reproduces merges.txt exactly.

    >>> derive_merges([b"a", b"b", b"c", b"ab", b"abc", b"<|endoftext|>"])
    [(b'a', b'b'), (b'ab', b'c')]
    """
    ranks: dict[bytes, int] = {}
    for token_id, token in enumerate(vocab):
        if not is_control_token(token):
            ranks.setdefault(token, token_id)
    merges = []
    for token, token_rank in ranks.items():
        if len(token) < 2:
            continue

        def rank_below_token(left: bytes, right: bytes, token_rank: int = token_rank) -> int:
            rank = ranks.get(left + right, NO_MERGE)
            return rank if rank < token_rank else NO_MERGE

        parts = bpe(token, rank_below_token)
        if len(parts) == 2:
            merges.append((parts[0], parts[1]))
    return merges


class ModelVocabulary(Protocol):
    """What :meth:`Tokenizer.from_model` reads; ``ggml_py.formats.ModelFile`` has it. A Protocol
    because the model files depend on this module (byte alphabet, merge derivation), not the
    other way round."""

    @property
    def path(self) -> str: ...

    @property
    def vocab(self) -> Sequence[bytes]: ...  # token id -> raw bytes

    @property
    def merges(self) -> Sequence[tuple[bytes, bytes]] | None: ...  # None: rank merges by id


class Tokenizer:
    """Byte-level BPE tokenizer: text <-> token ids, identical to GPT2TokenizerFast.

    Build it with :meth:`from_pretrained` (a Hugging Face folder), :meth:`from_vocab` (a list of
    token bytes, no merges) or :meth:`from_model` (the vocabulary of an opened ggml/GGUF file:
    ``Tokenizer.from_model(ggml_py.formats.open_model(path))``).

    >>> byte_tokens = [bytes([b]) for b in range(256)]
    >>> tok = Tokenizer.from_vocab(byte_tokens + [b"ab", b"abc", b" ab", b"<|endoftext|>"])
    >>> tok.encode("abc ab<|endoftext|>")
    [257, 258, 259]
    >>> tok.decode([257, 258]), tok.vocab_size, tok.eos_id
    ('abc ab', 260, 259)
    """

    def __init__(
        self,
        token_bytes: Sequence[bytes | None],
        added_tokens: Mapping[str, int],
        merges: Sequence[tuple[bytes, bytes]] | None,
        eos_id: int | None,
        source: str | None,
    ):
        """Prefer the ``from_*`` constructors. ``token_bytes[id]`` is each id's raw bytes (None
        for an unused id); ``added_tokens`` maps each added token's text to its id; ``merges``
        lists the BPE merges by rank, or is None to rank merges by token id (tiktoken style);
        ``source`` names the files in error messages."""
        self._token_bytes: list[bytes | None] = list(token_bytes)
        self._added_ids: dict[str, int] = dict(added_tokens)
        self.eos_id: int | None = eos_id
        # Ranking by id would let BPE build an added token out of its pieces, so then added
        # tokens are no BPE tokens (as tiktoken keeps special tokens apart); with merges only the
        # listed merges can build a token, and a vocab.json token stays one even when it is also
        # added (Hugging Face matches it whole first, but the merges still refer to it).
        not_bpe = set(self._added_ids.values()) if merges is None else set()
        # bytes -> id of the BPE tokens; the lowest id wins when a vocabulary repeats a token.
        self._bpe_ids: dict[bytes, int] = {}
        for token_id, data in enumerate(self._token_bytes):
            if data and token_id not in not_bpe:
                self._bpe_ids.setdefault(data, token_id)
        missing = [byte for byte in range(256) if bytes([byte]) not in self._bpe_ids]
        if missing:
            raise TokenizerError(
                source,
                f"vocabulary has no token for byte 0x{missing[0]:02x} (every byte needs one)",
            )
        self._rank = (
            self._merge_rank_function(merges, source)
            if merges is not None
            else self._id_rank_function()
        )
        # Longest first, so that at any position the longest added token wins, as in Hugging
        # Face (<|extratoken_10|> before <|extratoken_1|>).
        by_length = sorted(self._added_ids, key=len, reverse=True)
        self._added_pattern = re.compile("|".join(map(re.escape, by_length))) if by_length else None
        self._cache: dict[str, tuple[int, ...]] = {}

    def _merge_rank_function(
        self, merges: Sequence[tuple[bytes, bytes]], source: str | None
    ) -> RankFunction:
        # A later duplicate of a merge overrides the earlier rank, as in Hugging Face.
        pair_ranks = {pair: rank for rank, pair in enumerate(merges)}
        for rank, (left, right) in enumerate(merges):
            if left + right not in self._bpe_ids:
                pair = f"{bytes_to_token(left)} {bytes_to_token(right)}"
                raise TokenizerError(
                    source, f"merge {rank} ({pair}) makes a token that is not in the vocabulary"
                )
        return lambda left, right: pair_ranks.get((left, right), NO_MERGE)

    def _id_rank_function(self) -> RankFunction:
        bpe_ids = self._bpe_ids
        return lambda left, right: bpe_ids.get(left + right, NO_MERGE)

    # ----------------------------------------------------------------------------- constructors

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike[str]) -> Tokenizer:
        """Load vocab.json and merges.txt from a Hugging Face folder, with the added and special
        tokens of added_tokens.json, tokenizer_config.json and special_tokens_map.json, giving
        them the ids transformers 5 gives them (spec/tokenizer.md, section 3.1)."""
        folder = Path(folder)
        vocab_path = folder / "vocab.json"
        for required in (vocab_path, folder / "merges.txt"):
            if not required.is_file():
                raise TokenizerError(
                    folder, f"no {required.name}: not a GPT-2/GPT-J tokenizer folder"
                )
        vocab_ids = read_unique_token_ids(vocab_path)
        if not vocab_ids:
            raise TokenizerError(vocab_path, "the vocabulary is empty")
        # Ids index a list, so a forged id of 10**12 would allocate terabytes: allow gaps, but
        # no more unused ids than used ones.
        highest_token = max(vocab_ids, key=vocab_ids.__getitem__)
        if vocab_ids[highest_token] >= 2 * len(vocab_ids):
            reason = (
                f"token {highest_token!r} has id {vocab_ids[highest_token]}, but there are only "
                f"{len(vocab_ids)} tokens: more than half of the ids up to it would be unused"
            )
            raise TokenizerError(vocab_path, reason)
        merges = read_merges(folder / "merges.txt")
        config_path = folder / "tokenizer_config.json"
        config = read_json_object(config_path) if config_path.is_file() else {}
        special_path = folder / "special_tokens_map.json"
        special_map = read_json_object(special_path) if special_path.is_file() else {}
        added_path = folder / "added_tokens.json"
        if "added_tokens_decoder" in config:  # replaces added_tokens.json, as in transformers 5
            listed = _added_tokens_decoder(config, config_path)
        elif added_path.is_file():
            listed = read_token_ids(added_path)
        else:
            listed = {}
        # Ids as transformers 5 assigns them: the added tokens in the order of their listed ids,
        # then the special tokens; a token already in vocab.json keeps its id, any other takes the
        # next id. Files written by transformers list exactly these ids.
        special_names = _special_token_names(config, special_map)
        added_tokens: dict[str, int] = {}
        taken_ids = set(vocab_ids.values())
        next_id = len(vocab_ids)
        for content in [*sorted(listed, key=listed.__getitem__), *special_names.values()]:
            if content in added_tokens:
                continue
            if content in vocab_ids:
                added_tokens[content] = vocab_ids[content]
                continue
            if next_id in taken_ids:
                reason = f"ids are not 0..{len(vocab_ids) - 1}, so added token {content!r} has no free id"
                raise TokenizerError(vocab_path, reason)
            added_tokens[content] = next_id
            next_id += 1
        eos_id = added_tokens.get(special_names["eos_token"])
        token_bytes: list[bytes | None] = [None] * (
            max([*vocab_ids.values(), *added_tokens.values()]) + 1
        )
        for token, token_id in vocab_ids.items():
            token_bytes[token_id] = _file_token_bytes(token, vocab_path)
        for token, token_id in added_tokens.items():
            token_bytes[token_id] = _added_token_bytes(token)
        return cls(token_bytes, added_tokens, merges, eos_id, os.fspath(folder))

    @classmethod
    def from_vocab(
        cls, tokens: Sequence[bytes], added_token_ids: Iterable[int] | None = None
    ) -> Tokenizer:
        """A tokenizer from the token bytes alone, without merges: the id of the token a pair
        would form is its merge rank (tiktoken style), which reproduces merges.txt for GPT-2.

        ``added_token_ids`` are matched whole before BPE; by default every token shaped like
        ``<|name|>`` (printable ASCII, no ``|`` inside) is one, which covers ``<|endoftext|>`` and
        GPT-J's ``<|extratoken_N|>``. ``eos_id`` is the id of ``<|endoftext|>`` when present.
        """
        return cls._from_token_list(tokens, None, added_token_ids, None)

    @classmethod
    def from_model(cls, model: ModelVocabulary) -> Tokenizer:
        """The tokenizer of an opened model file (``ggml_py.formats.open_model(path)``): its
        vocabulary, and its merges if it has them."""
        return cls._from_token_list(model.vocab, model.merges, None, os.fspath(model.path))

    @classmethod
    def _from_token_list(cls, tokens, merges, added_token_ids, source) -> Tokenizer:
        if added_token_ids is None:
            added_token_ids = [i for i, data in enumerate(tokens) if is_control_token(data)]
        added_tokens = {}
        for token_id in added_token_ids:
            if not 0 <= token_id < len(tokens):
                raise TokenizerError(source, f"added token id {token_id} is not in the vocabulary")
            try:
                added_tokens[tokens[token_id].decode("utf-8")] = token_id
            except UnicodeDecodeError:
                raise TokenizerError(
                    source, f"added token {token_id} is not valid UTF-8 text"
                ) from None
        eos_id = next((i for i, data in enumerate(tokens) if data == ENDOFTEXT.encode()), None)
        return cls(tokens, added_tokens, merges, eos_id, source)

    # --------------------------------------------------------------------------------- encoding

    @property
    def vocab_size(self) -> int:
        """Number of token ids (highest id + 1), added tokens included: 50400 for GPT-J."""
        return len(self._token_bytes)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``; no BOS or EOS is added.

        >>> tok = Tokenizer.from_vocab([bytes([b]) for b in range(256)] + [b"ab"])
        >>> tok.encode("abab"), tok.encode(" ab")
        ([256, 256], [32, 256])
        """
        ids: list[int] = []
        try:
            if self._added_pattern is None:
                self._encode_ordinary(text, ids)
            else:
                start = 0
                for match in self._added_pattern.finditer(text):
                    self._encode_ordinary(text[start : match.start()], ids)
                    ids.append(self._added_ids[match.group()])
                    start = match.end()
                self._encode_ordinary(text[start:], ids)
        except UnicodeEncodeError:
            where = re.search("[\ud800-\udfff]", text).start()
            reason = f"text has a lone surrogate at character {where}, which has no UTF-8 encoding"
            raise TokenizerError(None, reason) from None
        return ids

    def _encode_ordinary(self, text: str, ids: list[int]) -> None:
        """Append the ids of text that contains no added token."""
        cache = self._cache
        for pretoken in pretokenize(text):
            pretoken_ids = cache.get(pretoken)
            if pretoken_ids is None:
                pretoken_ids = tuple(
                    map(self._bpe_ids.__getitem__, bpe(pretoken.encode("utf-8"), self._rank))
                )
                if len(cache) >= _CACHE_LIMIT:
                    cache.clear()
                cache[pretoken] = pretoken_ids
            ids += pretoken_ids

    # --------------------------------------------------------------------------------- decoding

    def token_bytes(self, token_id: int) -> bytes:
        """The raw bytes of one token (an added token's UTF-8 text).

        >>> Tokenizer.from_vocab([bytes([b]) for b in range(256)]).token_bytes(32)
        b' '
        """
        data = self._token_bytes[token_id] if 0 <= token_id < len(self._token_bytes) else None
        if data is None:
            reason = f"token id {token_id} is not in the vocabulary (ids 0..{len(self._token_bytes) - 1})"
            raise TokenizerError(None, reason)
        return data

    def decode(self, ids: Iterable[int]) -> str:
        """Text of a token sequence. The bytes of all tokens are joined before UTF-8 decoding,
        because one character may be split over several tokens; invalid UTF-8 becomes U+FFFD.

        >>> tok = Tokenizer.from_vocab([bytes([b]) for b in range(256)])
        >>> tok.decode([0xE2, 0x80, 0x99]), tok.decode([0xE2, 0x80])
        ('’', '�')
        """
        return b"".join([self.token_bytes(token_id) for token_id in ids]).decode(
            "utf-8", errors="replace"
        )

    def stream_decoder(self) -> StreamDecoder:
        """A decoder for tokens that arrive one at a time (see :class:`StreamDecoder`)."""
        return StreamDecoder(self)


class StreamDecoder:
    """Turns token ids into text as they arrive, never emitting half a UTF-8 character.

    Bytes of an unfinished character are held back until the token that completes it arrives;
    ``finish()`` returns what is still held (as U+FFFD if it never completed). The pieces joined
    equal ``Tokenizer.decode`` of all the ids.

    >>> stream = Tokenizer.from_vocab([bytes([b]) for b in range(256)]).stream_decoder()
    >>> [stream.feed(token_id) for token_id in (0xE2, 0x80, 0x99, 0xE2)], stream.finish()
    (['', '', '’', ''], '�')
    """

    def __init__(self, tokenizer: Tokenizer):
        self._tokenizer = tokenizer
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, token_id: int) -> str:
        """The text completed by this token (possibly empty)."""
        return self._utf8.decode(self._tokenizer.token_bytes(token_id))

    def finish(self) -> str:
        """The held-back bytes of an incomplete character (U+FFFD), and reset for reuse."""
        return self._utf8.decode(b"", final=True)


# ------------------------------------------------------------------------------- file reading


def _file_token_bytes(token: str, path: str | os.PathLike[str]) -> bytes:
    """``token_to_bytes`` with the error naming the file the token came from."""
    try:
        return token_to_bytes(token)
    except TokenizerError as error:
        raise TokenizerError(path, error.reason) from None


def _added_token_bytes(content: str) -> bytes:
    # Hugging Face's byte-level decoder maps an added token through the byte alphabet when every
    # character is in it, and takes its UTF-8 text otherwise; ggml's converter does the former.
    try:
        return token_to_bytes(content)
    except TokenizerError:
        return content.encode("utf-8")


def read_json_object(
    path: str | os.PathLike[str], error_type: type[GgmlPyError] = TokenizerError
) -> dict:
    """The JSON object in the UTF-8 file ``path`` (a Hugging Face tokenizer or config file);
    anything else raises ``error_type`` naming the file."""
    with open(path, "rb") as file:
        value = parse_json(path, file.read(), error_type)
    if not isinstance(value, dict):
        raise error_type(path, f"expected a JSON object, found {type(value).__name__}")
    return value


def read_token_ids(path: str | os.PathLike[str]) -> dict[str, int]:
    """A JSON object of token text -> id (vocab.json, added_tokens.json), every id checked to be
    a non-negative integer."""
    mapping = read_json_object(path)
    for token, token_id in mapping.items():
        if not isinstance(token_id, int) or isinstance(token_id, bool) or token_id < 0:
            raise TokenizerError(
                path, f"token {token!r} has id {token_id!r}, expected a non-negative integer"
            )
    return mapping


def read_unique_token_ids(path: str | os.PathLike[str]) -> dict[str, int]:
    """``read_token_ids`` with each id used once: an id stands for one token (one embedding row
    of a model), so of two tokens sharing it, one would decode as the other."""
    table = read_token_ids(path)
    seen = {}
    for token, token_id in table.items():
        if token_id in seen:
            raise TokenizerError(
                path, f"tokens {seen[token_id]!r} and {token!r} share id {token_id}"
            )
        seen[token_id] = token
    return table


def _token_content(value) -> str | None:
    """A special token's text: a plain string or an AddedToken object ``{"content": ...}``."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


_SPECIAL_TOKEN_ROLES = (
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
)


def _special_token_names(config: dict, special_map: dict) -> dict[str, str]:
    """role -> text of the special tokens, in transformers' order of roles (bos, eos, unk first).

    special_tokens_map.json overrides tokenizer_config.json; bos, eos and unk default to
    <|endoftext|> (GPT2Tokenizer's defaults), so even a folder with only vocab.json and merges.txt
    matches <|endoftext|> whole.
    """
    names = {"bos_token": ENDOFTEXT, "eos_token": ENDOFTEXT, "unk_token": ENDOFTEXT}
    for role in _SPECIAL_TOKEN_ROLES:
        content = _token_content(special_map.get(role, config.get(role)))
        if content is not None:
            names[role] = content
    additional = (
        special_map.get("additional_special_tokens", config.get("additional_special_tokens")) or []
    )
    for index, value in enumerate(additional):
        content = _token_content(value)
        if content is not None:
            names[f"additional_special_tokens[{index}]"] = content
    return names


def _added_tokens_decoder(config: dict, path: Path) -> dict[str, int]:
    """The ``added_tokens_decoder`` section of newer tokenizer_config.json files: id -> token."""
    added = {}
    for key, value in (config.get("added_tokens_decoder") or {}).items():
        content = _token_content(value)
        # isascii: str.isdigit also accepts digits such as "²" that int() refuses
        if content is None or not (key.isascii() and key.isdigit() and len(key) <= 18):
            raise TokenizerError(
                path, f"added_tokens_decoder entry {key!r} is not an id with a token"
            )
        added[content] = int(key)
    return added


def read_merges(path: Path) -> list[tuple[bytes, bytes]]:
    """merges.txt: an optional ``#version`` line, then one ``left right`` pair per line, by rank."""
    try:
        with open(path, "rb") as file:
            text = file.read().decode("utf-8")
    except UnicodeDecodeError as error:
        raise TokenizerError(path, "not UTF-8 text", offset=error.start) from None
    # Splitting on "\n" only: str.splitlines would also split on U+0085 and U+2028.
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    # Most merge parts are vocabulary tokens; converting each distinct string once saves time.
    converted: dict[str, bytes] = {}
    merges = []
    for line_number, line in enumerate(lines, start=1):
        line = line.rstrip("\r")
        if line.startswith("#version"):
            continue
        pair = line.split(" ")
        if len(pair) != 2 or not pair[0] or not pair[1]:
            raise TokenizerError(
                path,
                f"line {line_number}: expected two tokens separated by one space, found {line!r}",
            )
        for part in pair:
            if part not in converted:
                converted[part] = _file_token_bytes(part, path)
        merges.append((converted[pair[0]], converted[pair[1]]))
    return merges
