"""The ``ggml-py`` command line: argparse subcommands over the library.

This is the only module that prints for humans. Library code raises ``GgmlPyError`` subclasses
with one-line messages naming the file; ``main`` prints them as ``ggml-py: error: ...`` and
returns 1 (runtime failure). argparse usage errors exit with 2. ``--debug`` shows tracebacks.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, List, Optional

from ggml_py.errors import GgmlPyError

# Each subcommand module-level function pair: ``_add_<name>(subparsers)`` registers the parser
# and sets ``handler``; the handler takes the parsed namespace and returns an exit code.
_REGISTRARS: List[Callable[[argparse._SubParsersAction], None]] = []


def _subcommand(register: Callable[[argparse._SubParsersAction], None]):
    _REGISTRARS.append(register)
    return register


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ggml-py",
        description="Read, convert, quantize and run GPT-J models on a CPU with NumPy.",
    )
    parser.add_argument("--debug", action="store_true", help="show a traceback on errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for register in _REGISTRARS:
        register(subparsers)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except GgmlPyError as error:
        if args.debug:
            raise
        _print_error(str(error))
        return 1
    except OSError as error:
        if args.debug:
            raise
        # e.g. "[Errno 2] No such file or directory: 'x'" -> one line naming the file
        where = f"{error.filename}: " if error.filename else ""
        _print_error(f"{where}{error.strerror or error}")
        return 1
    except KeyboardInterrupt:
        _print_error("interrupted")
        return 130


def _print_error(message: str) -> None:
    print(f"ggml-py: error: {message}", file=sys.stderr)


def _existing_path(text: str) -> str:
    """argparse type for an input path: a usage error (exit 2) when it does not exist."""
    if not os.path.exists(text):
        raise argparse.ArgumentTypeError(f"{text}: no such file or folder")
    return text
