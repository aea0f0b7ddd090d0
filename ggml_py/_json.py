"""JSON from untrusted files: every way ``json.loads`` can fail becomes one ``GgmlPyError``.

Besides ``JSONDecodeError``, Python's json module fails in two ways of its own: nesting deeper
than the recursion limit raises ``RecursionError`` (a vocab.json of 100,000 ``[`` is 100 kB), and
an integer of more than ``sys.get_int_max_str_digits()`` digits (4300 by default) raises a plain
``ValueError`` from the int conversion. Both are faults of the file, so both name it.

>>> parse_json("config.json", b"[" * 100_000)
Traceback (most recent call last):
ggml_py.errors.GgmlPyError: config.json: not valid JSON: nested too deeply for Python's json module
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable

from ggml_py.errors import GgmlPyError


def parse_json(
    path: str | os.PathLike[str],
    raw: bytes,
    error_type: type[GgmlPyError] = GgmlPyError,
    *,
    subject: str = "",
    start: int = 0,
    object_pairs_hook: Callable[[list[tuple[str, object]]], object] | None = None,
) -> object:
    """The JSON value in ``raw``, the UTF-8 bytes at byte ``start`` of the file ``path``.

    A fault raises ``error_type`` with the reason prefixed by ``subject`` (e.g. ``"safetensors
    header is "``): a byte that is not UTF-8 or that breaks the syntax is given with its offset
    in the file; the json module's limits (too deep, too long a number) are faults of the whole
    document and name the file only.

    >>> parse_json("a.json", b'{"n": }', subject="header is ")
    Traceback (most recent call last):
    ggml_py.errors.GgmlPyError: a.json: header is not valid JSON: Expecting value at line 1 \
column 7 (at byte 6)
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise error_type(path, f"{subject}not UTF-8 text", start + error.start) from None
    try:
        return json.loads(text, object_pairs_hook=object_pairs_hook)
    except json.JSONDecodeError as error:  # .pos counts characters, the offset bytes
        where = start + len(text[: error.pos].encode("utf-8"))
        reason = f"{error.msg} at line {error.lineno} column {error.colno}"
        raise error_type(path, f"{subject}not valid JSON: {reason}", where) from None
    except RecursionError:
        reason = "nested too deeply for Python's json module"
    except ValueError:  # only int() raises it (hooks given here must not)
        reason = f"a number of more than {sys.get_int_max_str_digits()} digits"
    raise error_type(path, f"{subject}not valid JSON: {reason}")
