"""The ``ggml-py`` command line: argparse subcommands over the library.

This is the only module that prints for humans. Library code raises ``GgmlPyError`` subclasses
with one-line messages naming the file; ``main`` prints them as ``ggml-py: error: ...`` and
returns 1 (runtime failure). Usage errors (argparse's, and ``UsageError`` from a handler's own
checks, made before it prints anything) exit with 2, Ctrl-C with 130, a closed stdout quietly
with 141 (as if killed by SIGPIPE, like ``cat``). ``--debug`` shows tracebacks.

The module imports only the standard library and ``ggml_py.errors``: ``--version``, ``--help``
and usage errors answer at once, and each handler imports what it needs.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import shlex
import sys
import time
import warnings
from collections.abc import Callable, Iterator

from ggml_py import __version__
from ggml_py.errors import GgmlPyError, ModelFileError

# Each subcommand module-level function pair: ``_add_<name>(subparsers)`` registers the parser
# and sets ``handler``; the handler takes the parsed namespace and returns an exit code.
_REGISTRARS: list[Callable[[argparse._SubParsersAction], None]] = []


def _subcommand(register: Callable[[argparse._SubParsersAction], None]):
    _REGISTRARS.append(register)
    return register


class UsageError(Exception):
    """A handler's arguments contradict each other: printed with the subcommand's usage, exit 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ggml-py",
        description="Read, convert, quantize and run GPT-J models on a CPU with NumPy.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help="show a traceback on errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for register in _REGISTRARS:
        register(subparsers)
    for subparser in subparsers.choices.values():  # for UsageError's message
        subparser.set_defaults(subparser=subparser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; the exit status is returned (argparse's usage errors raise SystemExit)."""
    try:
        try:
            return _run_command(argv)
        finally:
            sys.stdout.flush()  # a closed pipe is noticed here, not at interpreter exit
    except BrokenPipeError:
        # `ggml-py info FILE | head`: the reader has gone. Python's documented recipe: point
        # stdout at devnull, so the flush at interpreter exit does not fail again.
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):  # stdout is not a file (replaced in-process)
            pass
        return 141
    except KeyboardInterrupt:
        _print_error("interrupted")
        return 130


def _run_command(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except UsageError as error:
        args.subparser.error(str(error))  # exits with 2
    except BrokenPipeError:
        raise
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


def _print_error(message: str) -> None:
    print(f"ggml-py: error: {message}", file=sys.stderr)


def _existing_path(text: str) -> str:
    """argparse type for an input path: a usage error (exit 2) when it does not exist."""
    if not os.path.exists(text):
        raise argparse.ArgumentTypeError(f"{text}: no such file or folder")
    return text


def _existing_file(text: str) -> str:
    """argparse type for an input file: a usage error when it does not exist or is a folder."""
    if os.path.isdir(_existing_path(text)):
        raise argparse.ArgumentTypeError(f"{text}: is a folder, a file is expected")
    return text


def _utf8_text(text: str) -> str:
    """argparse type for text that must be UTF-8: argument bytes that are not arrive as lone
    surrogates (Python's surrogateescape), and would otherwise fail much later."""
    try:
        os.fsencode(text).decode("utf-8")
    except UnicodeEncodeError as error:
        raise argparse.ArgumentTypeError(
            f"not valid UTF-8 (a lone surrogate at character {error.start})"
        ) from None
    except UnicodeDecodeError as error:
        raise argparse.ArgumentTypeError(
            f"not valid UTF-8 (byte 0x{error.object[error.start]:02x} at byte {error.start} of the argument)"
        ) from None
    return text


def _model_file(text: str) -> str:
    """argparse type for a ggml/GGUF model file: a Hugging Face folder gets the command that
    makes one."""
    if os.path.isfile(os.path.join(text, "config.json")):
        raise argparse.ArgumentTypeError(
            f"{text}: a Hugging Face folder, not a model file; convert it first: "
            f"ggml-py convert {shlex.quote(text)}"
        )
    return _existing_file(text)


def _text_file(text: str) -> str:
    """argparse type for a text file to read, or ``-`` for standard input."""
    return text if text == "-" else _existing_file(text)


def _read_text(path: str) -> str:
    """A text file's contents, or standard input's for ``-``; bytes that are not UTF-8 become
    U+FFFD, as they do in a prompt argument."""
    if path == "-":
        return sys.stdin.buffer.read().decode("utf-8", errors="replace")
    with open(path, encoding="utf-8", errors="replace") as file:
        return file.read()


def _at_least(least: int) -> Callable[[str], int]:
    """argparse type for an integer of at least ``least``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"must be at least {least}, got {value}")
        return value

    return parse


def _installed_backend(name: str) -> str:
    """argparse type for ``--backend``: a registered backend's name."""
    from ggml_py.backend import installed_backends

    installed = installed_backends()
    if name not in installed:
        known = ", ".join(sorted(installed)) or "none"
        raise argparse.ArgumentTypeError(f"unknown backend '{name}' (installed: {known})")
    return name


def _refuse_overwriting_input(output: str, inputs: list[str]) -> None:
    """A usage error, before anything is written, when ``output`` is one of ``inputs`` under any
    name (a symbolic or hard link included)."""
    for path in inputs:
        if os.path.exists(output) and os.path.exists(path) and os.path.samefile(output, path):
            raise UsageError(
                f"{output}: is the same file as the input {path}; writing it would destroy the input"
            )


@contextlib.contextmanager
def _conversion_hint(path: str) -> Iterator[None]:
    """A checkpoint given where a ggml/GGUF model file is expected: the error names the command
    that converts it."""
    try:
        yield
    except ModelFileError as error:
        from ggml_py.checkpoint import open_checkpoint

        try:
            open_checkpoint(path)
        except (GgmlPyError, OSError):
            raise error from None
        folder = os.path.dirname(path) or "."
        raise ModelFileError(
            path,
            "a PyTorch/safetensors checkpoint, not a ggml or GGUF model file; convert its folder "
            f"first: ggml-py convert {shlex.quote(folder)}",
        ) from None


def _output_file(text: str) -> str:
    """argparse type for an output file: a usage error, before any work is done, when it is a
    folder or its folder does not exist."""
    if os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text}: is a folder, give the path of the file to write")
    folder = os.path.dirname(os.path.abspath(text))
    if not os.path.isdir(folder):
        raise argparse.ArgumentTypeError(f"{text}: no such folder {folder}")
    return text


# --- ls (checkpoints) --------------------------------------------------------------------------


@_subcommand
def _add_ls(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "ls",
        help="list the tensors of a checkpoint file or Hugging Face folder",
        description="List the tensors of a PyTorch (.bin/.pt, zip or legacy), safetensors or "
        "sharded checkpoint with their dtypes, shapes and sizes, without torch and without "
        "reading the tensor data.",
    )
    parser.add_argument(
        "path",
        type=_existing_path,
        help="pytorch_model.bin / .pt / .safetensors file, or a Hugging Face folder",
    )
    parser.set_defaults(handler=_ls)


def _ls(args: argparse.Namespace) -> int:
    from ggml_py.checkpoint import open_checkpoint

    tensors = list(open_checkpoint(args.path).values())
    rows = [
        (tensor.name, str(tensor.dtype), "[" + ", ".join(map(str, tensor.shape)) + "]")
        for tensor in tensors
    ]
    widths = [
        max([len(title)] + [len(row[column]) for row in rows])
        for column, title in enumerate(("name", "dtype", "shape"))
    ]
    print(f"{'name':<{widths[0]}}  {'dtype':<{widths[1]}}  {'shape':<{widths[2]}}  {'bytes':>12}")
    for (name, dtype, shape), tensor in zip(rows, tensors, strict=True):
        print(
            f"{name:<{widths[0]}}  {dtype:<{widths[1]}}  {shape:<{widths[2]}}  {tensor.nbytes:>12}"
        )
    parameters = sum(math.prod(tensor.shape) for tensor in tensors)
    total = sum(tensor.nbytes for tensor in tensors)
    print(
        f"{len(tensors)} tensors, {parameters} parameters, {total} bytes ({total / 2**20:.2f} MiB)"
    )
    return 0


# --- info, convert, quantize (ggml GPT-J files) ----------------------------------------------


class _ProgressLine:
    """Prints ``tensor, percent, MB/s`` on one rewritten stderr line, at most 5 times a second."""

    def __init__(self) -> None:
        self.start = time.monotonic()
        self.last = 0.0
        self.shown = False

    def __call__(self, name: str, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self.last < 0.2 and done < total:
            return
        self.last = now
        rate = done / max(now - self.start, 1e-9) / 1e6
        percent = 100.0 * done / total if total else 100.0
        print(
            f"\r{percent:5.1f}% {rate:8.1f} MB/s  {name[:60]:<60}",
            end="",
            file=sys.stderr,
            flush=True,
        )
        self.shown = True

    def finish(self) -> None:
        if self.shown:
            print(file=sys.stderr)


def _run_writer(
    args: argparse.Namespace, write: Callable[[Callable[[str, int, int], None] | None], None]
) -> None:
    """Run ``write(progress)`` with a progress line on a terminal (unless --quiet), then print the
    library's ConversionWarnings."""
    from ggml_py.convert import ConversionWarning

    progress = _ProgressLine() if sys.stderr.isatty() and not args.quiet else None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConversionWarning)
        try:
            write(progress)
        finally:
            if progress is not None:
                progress.finish()
            for warning in caught:
                print(f"ggml-py: warning: {warning.message}", file=sys.stderr)


def _file_type_argument(choices: list[str]) -> Callable[[str], object]:
    def parse(text: str):
        from ggml_py.formats.quant import GGMLFileType

        try:
            file_type = GGMLFileType.parse(text)
        except ValueError:
            file_type = None
        if file_type is None or file_type.short_name not in choices:
            numbers = ", ".join(f"{name} ({int(GGMLFileType.parse(name))})" for name in choices)
            raise argparse.ArgumentTypeError(f"unknown type {text!r}; choose one of {numbers}")
        return file_type

    return parse


@_subcommand
def _add_info(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "info",
        help="show a model file's header, vocabulary size and tensors",
        description="Show a ggml GPT-J or GGUF model file's header, file type, vocabulary size "
        "and tensor table; exit 1 when the file cannot be run (a tensor its header calls for is "
        "missing or has the wrong shape).",
    )
    parser.add_argument("file", type=_model_file, help="ggml GPT-J or GGUF model file")
    parser.set_defaults(handler=_info)


def _info(args: argparse.Namespace) -> int:
    from ggml_py.formats import open_model
    from ggml_py.formats.quant import QNT_VERSION_FACTOR
    from ggml_py.model import _check_model

    with _conversion_hint(args.file):
        model = open_model(args.file)
    hparams = model.hparams
    stored = model.quantization_version * QNT_VERSION_FACTOR + int(hparams.ftype)
    print(f"file:    {model.path}")
    print(f"format:  {model.format}")
    for field in hparams._fields[:-1]:
        print(f"{field:<8} {getattr(hparams, field)}")
    # a legacy header stores the quantization version inside ftype (2002 = version 2, q4_0)
    stored_as = f"stored as {stored}, " if model.format == "ggml" else ""
    print(
        f"ftype    {int(hparams.ftype)} ({hparams.ftype.short_name}), {stored_as}"
        f"quantization version {model.quantization_version}"
    )
    print(f"layer_norm_eps {model.layer_norm_eps:g}")
    print(f"vocabulary: {len(model.vocab)} tokens")
    total = sum(info.nbytes for info in model.tensors.values())
    print(f"tensors: {len(model.tensors)}, {total} bytes ({total / 2**20:.2f} MiB)")
    width = max((len(name) for name in model.tensors), default=4)
    print(f"{'name':<{width}}  {'type':<5} {'shape':<16} {'bytes':>12}")
    for info in model.tensors.values():
        shape = "[" + ", ".join(str(dim) for dim in info.shape) + "]"
        print(f"{info.name:<{width}}  {info.type.short_name:<5} {shape:<16} {info.nbytes:>12}")
    _check_model(model)  # the check `run` makes: can this file be run at all?
    return 0


_CONVERT_TYPES = ["f32", "f16", "q4_0", "q4_1", "q5_0", "q5_1", "q8_0"]
_QUANTIZE_TYPES = ["q4_0", "q4_1", "q5_0", "q5_1", "q8_0"]


@_subcommand
def _add_convert(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="convert a Hugging Face GPT-J folder to a ggml or GGUF file, or a ggml file to GGUF",
        description="Convert a Hugging Face GPT-J folder (torch or safetensors, sharded or not) to "
        "ggml's GPT-J file, byte-identical with ggml's convert-h5-to-ggml.py for f32/f16, or to GGUF "
        "(--format gguf). A ggml GPT-J model file of any type converts to GGUF with its tensor bytes "
        "unchanged.",
    )
    parser.add_argument(
        "source",
        metavar="HF_DIR|FILE",
        type=_existing_path,
        help="Hugging Face model folder, or a ggml GPT-J model file (with --format gguf)",
    )
    parser.add_argument(
        "--format",
        choices=["ggml", "gguf"],
        default="ggml",
        dest="file_format",
        help="output file format (default ggml)",
    )
    parser.add_argument(
        "--outtype",
        type=_file_type_argument(_CONVERT_TYPES),
        help=f"for a folder: one of {', '.join(_CONVERT_TYPES)} (default f16); a model "
        "file keeps its types",
    )
    parser.add_argument(
        "--vocab-dir",
        type=_existing_path,
        help="tokenizer folder whose merges.txt goes into the GGUF file of a model file "
        "(default: merges derived from the vocabulary)",
    )
    parser.add_argument(
        "--outfile",
        type=_output_file,
        help="output path (default HF_DIR/ggml-model-<outtype>.bin or .gguf; "
        "for a model file, the same name with .gguf)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress line")
    parser.set_defaults(handler=_convert)


def _convert(args: argparse.Namespace) -> int:
    from ggml_py.convert import convert_hf, convert_to_gguf
    from ggml_py.formats.quant import GGMLFileType

    if os.path.isdir(args.source):
        if args.vocab_dir is not None:
            raise UsageError(
                f"{args.source}: --vocab-dir is for model files; a folder uses its own merges.txt"
            )
        if args.outfile is not None and _is_folder_input(args.outfile, args.source):
            raise UsageError(
                f"{args.outfile}: a file of the folder being converted; writing it would "
                "destroy the input"
            )
        file_type = GGMLFileType.MOSTLY_F16 if args.outtype is None else args.outtype
        outfiles = []
        _run_writer(
            args,
            lambda progress: outfiles.append(
                convert_hf(
                    args.source, file_type, args.outfile, progress, file_format=args.file_format
                )
            ),
        )
        outfile = outfiles[0]
    else:
        if args.file_format != "gguf":
            raise UsageError(
                f"{args.source}: a model file can only be converted to GGUF (--format gguf)"
            )
        if args.outtype is not None:
            raise UsageError(
                f"{args.source}: --outtype is for folders; a model file keeps its tensor types"
            )
        outfile = args.outfile or os.path.splitext(args.source)[0] + ".gguf"
        merges = [] if args.vocab_dir is None else [os.path.join(args.vocab_dir, "merges.txt")]
        _refuse_overwriting_input(outfile, [args.source, *merges])
        _run_writer(
            args, lambda progress: convert_to_gguf(args.source, outfile, args.vocab_dir, progress)
        )
    if not args.quiet:
        print(f"wrote {outfile}", file=sys.stderr)
    return 0


def _is_folder_input(output: str, folder: str) -> bool:
    """Whether ``output`` is an existing file of ``folder`` that a conversion may read: a folder
    conversion reads the checkpoint, config and tokenizer files, never a ggml/GGUF model file, so
    only an earlier conversion's output may be overwritten."""
    from ggml_py.formats import open_model

    if not (os.path.isfile(output) and os.path.samefile(os.path.dirname(output) or ".", folder)):
        return False
    try:
        open_model(output)
    except (GgmlPyError, OSError):
        return True
    return False


@_subcommand
def _add_quantize(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "quantize",
        help="quantize an f32/f16 ggml GPT-J file",
        description="Quantize the 2-D weights of an f32 or f16 ggml GPT-J file, byte-identical with "
        "ggml's gpt-j-quantize.",
    )
    parser.add_argument("input", type=_model_file, help="f32 or f16 ggml GPT-J file")
    parser.add_argument("output", type=_output_file, help="quantized file to write")
    parser.add_argument(
        "type",
        type=_file_type_argument(_QUANTIZE_TYPES),
        help="q4_0, q4_1, q5_0, q5_1, q8_0, or ggml's ftype number 2, 3, 8, 9, 7",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress line")
    parser.set_defaults(handler=_quantize)


def _quantize(args: argparse.Namespace) -> int:
    from ggml_py.convert import quantize_file

    _refuse_overwriting_input(args.output, [args.input])
    with _conversion_hint(args.input):
        _run_writer(
            args, lambda progress: quantize_file(args.input, args.output, args.type, progress)
        )
    return 0


# --- tokenize ----------------------------------------------------------------------------------


@_subcommand
def _add_tokenize(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "tokenize",
        help="print the token ids of a text",
        description="Print the token ids of a text, the same as Hugging Face's GPT-2/GPT-J "
        "tokenizer, with the vocabulary of a Hugging Face folder or of a model file (whose BPE "
        "merges are derived from its vocabulary when it has none).",
    )
    parser.add_argument(
        "model", type=_existing_path, help="Hugging Face folder or ggml/GGUF model file"
    )
    parser.add_argument(
        "-p",
        "--prompt",
        required=True,
        help="the text to tokenize; - reads it from standard input (all of it, newlines kept)",
    )
    parser.add_argument(
        "--show", action="store_true", help="print each token's id and text, one per line"
    )
    parser.set_defaults(handler=_tokenize)


def _tokenize(args: argparse.Namespace) -> int:
    from ggml_py.formats import open_model
    from ggml_py.tokenizer import Tokenizer, escape_token

    if os.path.isdir(args.model):
        tokenizer = Tokenizer.from_pretrained(args.model)
    else:
        tokenizer = Tokenizer.from_model(open_model(args.model))
    # Bytes of the argument that are not UTF-8 arrive as lone surrogates (surrogateescape); turn
    # them into U+FFFD like any text decoded with errors="replace".
    text = (
        _read_text("-")
        if args.prompt == "-"
        else os.fsencode(args.prompt).decode("utf-8", errors="replace")
    )
    ids = tokenizer.encode(text)
    if args.show:
        for token_id in ids:
            print(f"{token_id}\t{escape_token(tokenizer.token_bytes(token_id))}")
    else:
        print(" ".join(map(str, ids)))
    return 0


# --- run, backends (inference) ---------------------------------------------------------------

# ggml's gpt_random_prompt: an empty prompt becomes one of these, picked by the seeded generator.
_RANDOM_PROMPTS = [
    "So",
    "Once upon a time",
    "When",
    "The",
    "After",
    "If",
    "import",
    "He",
    "She",
    "They",
]


def _add_backend_options(parser: argparse.ArgumentParser) -> None:
    """-t/--threads and --backend, shared by the subcommands that evaluate a model."""
    parser.add_argument(
        "-t",
        "--threads",
        type=_at_least(1),
        help="threads for the backend, at most the CPUs this process may use (default: 4)",
    )
    parser.add_argument(
        "--backend",
        type=_installed_backend,
        help="inference backend (default: $GGML_PY_BACKEND, else auto; see `ggml-py backends`)",
    )


@_subcommand
def _add_run(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "run",
        help="generate text from a GPT-J model file (ggml gpt-j's flags)",
        description="Generate text like ggml's gpt-j example, with its flags and defaults: the "
        "prompt and the generated text go to stdout as they are made, ggml's timing block to "
        "stderr. The prompt is evaluated in chunks of --batch_size tokens. Unlike ggml, "
        "--repeat-penalty and --ignore-eos take effect.",
    )
    parser.add_argument(
        "-m", "--model", required=True, type=_model_file, help="ggml or GGUF GPT-J model file"
    )
    parser.add_argument(
        "-p",
        "--prompt",
        default="",
        type=_utf8_text,
        help="prompt to start generation with (default: random)",
    )
    parser.add_argument(
        "-f",
        "--file",
        type=_text_file,
        help="append this file's text to the prompt (one trailing newline removed); - reads "
        "standard input",
    )
    parser.add_argument(
        "-s", "--seed", type=int, default=-1, help="RNG seed (default: -1, the current time)"
    )
    parser.add_argument(
        "-n",
        "--n_predict",
        type=_at_least(0),
        default=200,
        help="tokens to generate (default: 200)",
    )
    parser.add_argument("--top_k", type=int, default=40, help="top-k sampling (default: 40)")
    parser.add_argument("--top_p", type=float, default=0.9, help="top-p sampling (default: 0.9)")
    parser.add_argument(
        "--temp",
        type=float,
        default=0.9,
        help="temperature (default: 0.9); 0 or less picks the most likely token, as --top_k 1",
    )
    parser.add_argument(
        "--repeat-last-n",
        type=int,
        default=64,
        help="last n tokens the repeat penalty looks at (default: 64)",
    )
    parser.add_argument(
        "--repeat-penalty",
        type=float,
        default=1.0,
        help="penalty for repeated tokens, 1.0 = off (default: 1.0)",
    )
    parser.add_argument(
        "-b",
        "--batch_size",
        type=_at_least(1),
        default=32,
        help="prompt tokens per evaluation (default: 32)",
    )
    parser.add_argument(
        "--ignore-eos", action="store_true", help="keep generating after end-of-text"
    )
    _add_backend_options(parser)
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    from ggml_py.model import Timings, load
    from ggml_py.sampling import Sampler, SamplingSettings

    settings = SamplingSettings(
        args.top_k, args.top_p, args.temp, args.repeat_last_n, args.repeat_penalty
    )
    try:
        settings.check()
    except GgmlPyError as error:
        raise UsageError(error.reason) from None
    prompt = args.prompt
    if args.file:
        prompt += _read_text(args.file)
        if prompt.endswith("\n"):
            prompt = prompt[:-1]
    seed = args.seed if args.seed >= 0 else int(time.time())
    print(f"main: seed = {seed}", file=sys.stderr)
    sampler = Sampler(settings, seed)
    if not prompt:
        prompt = _RANDOM_PROMPTS[int(sampler.rng.next_uint32()[0]) % len(_RANDOM_PROMPTS)]

    load_start = time.perf_counter()
    n_threads = _thread_count(args.threads)
    with _conversion_hint(args.model):
        model = load(args.model, backend=args.backend, n_threads=n_threads)
    load_seconds = time.perf_counter() - load_start
    hp = model.hparams
    print(
        f"main: model = {model.path} (n_vocab {hp.n_vocab}, n_ctx {hp.n_ctx}, n_embd {hp.n_embd}, "
        f"n_head {hp.n_head}, n_layer {hp.n_layer}, n_rot {hp.n_rot}, ftype {hp.ftype.short_name})",
        file=sys.stderr,
    )
    print(f"main: backend = {_backend_in_use(model.backend)}, {n_threads} threads", file=sys.stderr)

    prompt_ids = model.tokenizer.encode(prompt)
    room = hp.n_ctx - len(prompt_ids)
    if args.n_predict > room >= 0:  # ggml stops at the end of the context too; say so
        print(
            f"ggml-py: warning: -n {args.n_predict} is beyond the context: {hp.n_ctx} positions, "
            f"{len(prompt_ids)} taken by the prompt, so at most {room} tokens are generated",
            file=sys.stderr,
        )
    timings = Timings()
    tokens = model.generate_ids(
        prompt_ids,
        args.n_predict,
        sampler,
        n_batch=args.batch_size,
        stop_at_eos=not args.ignore_eos,
        timings=timings,
    )
    print(f"main: number of tokens in prompt = {len(prompt_ids)}", file=sys.stderr)
    print(file=sys.stderr)

    decoder = model.tokenizer.stream_decoder()

    def pieces() -> Iterator[str]:
        yield "".join(decoder.feed(token) for token in prompt_ids)
        for token in tokens:
            yield decoder.feed(token)
        yield decoder.finish()

    last = ""
    for piece in pieces():
        _write_stdout(piece)
        last = piece or last
    if not last.endswith("\n"):  # end the output as a line, for the shell prompt after it
        _write_stdout("\n")

    predict_ms = timings.predict * 1000.0
    print("\n", file=sys.stderr)
    print(f"main: mem per token = {model.memory_per_token():8d} bytes", file=sys.stderr)
    print(f"main:     load time = {load_seconds * 1000.0:8.2f} ms", file=sys.stderr)
    print(f"main:   sample time = {timings.sample * 1000.0:8.2f} ms", file=sys.stderr)
    # ggml divides by n_past: prompt and generated tokens, minus the last one (never evaluated)
    print(
        f"main:  predict time = {predict_ms:8.2f} ms / {predict_ms / max(model.n_past, 1):.2f} ms per token",
        file=sys.stderr,
    )
    print(
        f"main:    total time = {(time.perf_counter() - started) * 1000.0:8.2f} ms", file=sys.stderr
    )
    return 0


def _write_stdout(text: str) -> None:
    """Write generated text at once, as UTF-8 whatever the locale says."""
    if text:
        stream = getattr(sys.stdout, "buffer", None)
        if stream is None:
            sys.stdout.write(text)
        else:
            stream.write(text.encode("utf-8"))
        sys.stdout.flush()


@_subcommand
def _add_backends(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "backends",
        help="list the installed inference backends",
        description="List the inference backends registered in the ggml_py.backends entry-point "
        "group: name, where each comes from, what it does, and which one `run` uses by default.",
    )
    parser.set_defaults(handler=_backends)


def _thread_count(requested: int | None) -> int:
    """``-t`` (default 4), at most the CPUs this process may use (its affinity, not the
    machine's): more threads than CPUs only take turns."""
    from ggml_py.backend import default_thread_count

    return min(requested or 4, default_thread_count())


def _backend_in_use(backend: object) -> str:
    """``numba``, or for ``auto`` what it chose and why: ``numba (auto: ...)``."""
    chosen = getattr(backend, "chosen", None)
    if chosen is None:
        return backend.name
    return f"{chosen.name} (auto: {backend.reason})"


def _loaded_or_none(entry: object) -> type | None:
    try:
        return None if entry is None else entry.load()
    except GgmlPyError:
        return None


def _backends(args: argparse.Namespace) -> int:
    from ggml_py.backend import installed_backends, resolve_backend_name

    default = resolve_backend_name()
    rows = []
    for name, entry in sorted(installed_backends().items()):
        try:
            description = getattr(entry.load(), "description", "")
        except GgmlPyError as error:
            description = f"unavailable: {error.reason}"
        where = f"{entry.target} [{entry.distribution or 'unknown distribution'}]"
        rows.append((("* " if name == default else "  ") + name, where, description))
    widths = [max(len(row[i]) for row in rows) for i in range(2)] if rows else [0, 0]
    for name, where, description in rows:
        print(f"{name:<{widths[0]}}  {where:<{widths[1]}}  {description}")
    print("(* = default: --backend, then $GGML_PY_BACKEND, then auto)")
    preview = getattr(_loaded_or_none(installed_backends().get("auto")), "preview", None)
    if preview is not None:
        print(f"auto picks here: {preview()}")
    if default not in installed_backends():  # only $GGML_PY_BACKEND can name it
        _print_error(
            f"$GGML_PY_BACKEND names '{default}', which is not installed; "
            "`run` will refuse it until it is"
        )
        return 1
    return 0


# --- perplexity --------------------------------------------------------------------------------


@_subcommand
def _add_perplexity(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "perplexity",
        help="perplexity of a model on a text, and KL divergence from a base model",
        description="Measure a model's perplexity on a text as llama.cpp's llama-perplexity does: "
        "the text is cut into chunks of -c tokens, each evaluated from scratch and scored on its "
        "second half. The running estimate per chunk ([1]x,[2]y,...) goes to stderr, the final "
        "'PPL = x +/- y' to stdout. With --kl-base (a model file of the same vocabulary, "
        "typically the f16 or f32 file a quantized one was made from) both models evaluate the "
        "same chunks, and stdout gets llama.cpp's statistics: KL divergence from the base (mean, "
        "median, percentiles, maximum), ln(PPL(Q)/PPL(base)) and how often the top tokens agree.",
    )
    parser.add_argument(
        "-m", "--model", required=True, type=_model_file, help="ggml or GGUF GPT-J model file"
    )
    parser.add_argument(
        "-f",
        "--file",
        required=True,
        type=_text_file,
        help="UTF-8 text to measure ('-' reads standard input)",
    )
    parser.add_argument(
        "-c",
        "--ctx-size",
        type=int,
        help="tokens per chunk (default: the model's context, at most 512)",
    )
    parser.add_argument(
        "-b",
        "--batch-size",
        type=_at_least(1),
        default=512,
        help="tokens per evaluation (default: 512)",
    )
    _add_backend_options(parser)
    parser.add_argument(
        "--kl-base",
        metavar="BASE_MODEL",
        type=_model_file,
        help="model file to compare with: KL divergence, same-top agreement, ln(PPL ratio)",
    )
    parser.set_defaults(handler=_perplexity)


def _perplexity(args: argparse.Namespace) -> int:
    from ggml_py.model import load
    from ggml_py.perplexity import compute_perplexity

    text = _read_text(args.file)
    where = "<stdin>" if args.file == "-" else args.file
    n_threads = _thread_count(args.threads)
    with _conversion_hint(args.model):
        model = load(args.model, backend=args.backend, n_threads=n_threads)
    base = None
    if args.kl_base:
        with _conversion_hint(args.kl_base):
            base = load(args.kl_base, backend=args.backend, n_threads=n_threads)
    for name, loaded in (("model", model), ("kl-base", base)):
        if loaded is not None:
            hp = loaded.hparams
            print(
                f"perplexity: {name} = {loaded.path} (n_vocab {hp.n_vocab}, n_ctx {hp.n_ctx}, "
                f"ftype {hp.ftype.short_name}), backend {_backend_in_use(loaded.backend)}, "
                f"{n_threads} threads",
                file=sys.stderr,
            )
    n_ctx = args.ctx_size if args.ctx_size is not None else min(model.n_ctx, 512)
    print("perplexity: tokenizing the input ..", file=sys.stderr)
    ids = model.tokenizer.encode(text)
    n_chunks = len(ids) // n_ctx if n_ctx > 0 else 0
    print(
        f"perplexity: {len(ids)} tokens; calculating perplexity over {n_chunks} chunks, "
        f"n_ctx={n_ctx}, batch_size={min(args.batch_size, max(n_ctx, 1))}",
        file=sys.stderr,
    )
    result = compute_perplexity(
        model,
        ids,
        n_ctx,
        args.batch_size,
        kl_base=base,
        text_path=where,
        on_chunk=_print_chunk if base is None else _print_kl_chunk,
    )
    print(file=sys.stderr)
    print(f"Final estimate: PPL = {result.ppl}")
    if base is not None:
        _print_kl_summary(result)
    return 0


def _print_eta(result) -> None:
    if result.chunks_done == 1:
        seconds = result.seconds
        print(
            f"perplexity: {seconds:.2f} seconds per pass - ETA "
            f"{seconds * result.n_chunks / 60:.2f} minutes",
            file=sys.stderr,
        )


def _print_chunk(result) -> None:
    _print_eta(result)
    print(f"[{result.chunks_done}]{result.ppl.value:.4f},", end="", file=sys.stderr, flush=True)


def _print_kl_chunk(result) -> None:
    _print_eta(result)
    if result.chunks_done == 1:
        print(
            "chunk             PPL               ln(PPL(Q)/PPL(base))          KL Divergence"
            "            Same top p",
            file=sys.stderr,
        )
    ppl, ratio, kl, top = (
        result.ppl,
        result.log_ppl_ratio,
        result.mean_kl,
        result.same_top_fraction,
    )
    print(
        f"{result.chunks_done:4d}    {ppl.value:9.4f} ± {ppl.error:9.4f}    "
        f"{ratio.value:10.5f} ± {ratio.error:10.5f}    {kl.value:10.5f} ± {kl.error:10.5f}    "
        f"{100 * top.value:6.3f} ± {100 * top.error:6.3f} %",
        file=sys.stderr,
        flush=True,
    )


def _print_kl_summary(result) -> None:
    ppl, base_ppl, ratio = result.ppl, result.base_ppl, result.log_ppl_ratio
    kl, top = result.mean_kl, result.same_top_fraction
    print()
    print("====== Perplexity statistics ======")
    print(f"Mean PPL(Q)                   : {ppl.value:10.6f} ± {ppl.error:10.6f}")
    print(f"Mean PPL(base)                : {base_ppl.value:10.6f} ± {base_ppl.error:10.6f}")
    print(f"Mean ln(PPL(Q)/PPL(base))     : {ratio.value:10.6f} ± {ratio.error:10.6f}")
    ppl_ratio = math.exp(ratio.value)
    print(f"Mean PPL(Q)/PPL(base)         : {ppl_ratio:10.6f} ± {ppl_ratio * ratio.error:10.6f}")
    print()
    print("====== KL divergence statistics ======")
    print(f"Mean    KLD: {kl.value:10.6f} ± {kl.error:10.6f}")
    for label, fraction in (
        ("Maximum", 1.0),
        ("99.9%  ", 0.999),
        ("99.0%  ", 0.99),
        ("95.0%  ", 0.95),
        ("90.0%  ", 0.9),
        ("Median ", 0.5),
        ("10.0%  ", 0.1),
        ("Minimum", 0.0),
    ):
        print(f"{label} KLD: {result.kl_percentile(fraction):10.6f}")
    print()
    print("====== Token probability statistics ======")
    print(f"Same top p: {100 * top.value:6.3f} ± {100 * top.error:5.3f} %")
