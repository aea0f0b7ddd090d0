"""The command line's shell manners: --version, a closed pipe, Ctrl-C, standard input for `-`,
hints that name the next command, a description for every subcommand, and `info` on a file that
cannot be run."""

from __future__ import annotations

import argparse
import importlib.abc
import io
import signal
import struct
import subprocess
import sys
import time
from importlib import metadata

import pytest
from conftest import REPO, TINY_MODEL
from test_model import byte_model_file, write_model_file

import ggml_py
from ggml_py.cli import build_parser, main


def ggml_py_command(*args, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "ggml_py", *map(str, args)], cwd=REPO, text=True, **kwargs
    )


def test_version_names_the_command_and_the_installed_version():
    result = subprocess.run(
        [sys.executable, "-m", "ggml_py", "--version"], capture_output=True, text=True, cwd=REPO
    )
    assert result.returncode == 0 and result.stderr == ""
    assert result.stdout == f"ggml-py {ggml_py.__version__}\n"
    assert ggml_py.__version__ == metadata.version("ggml-py-gptj")


def test_every_subcommand_has_a_description():
    parser = build_parser()
    (subparsers,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert len(subparsers.choices) >= 7
    for name, subparser in subparsers.choices.items():
        assert subparser.description and len(subparser.description) > 40, name
        help_text = " ".join(subparser.format_help().split())
        assert " ".join(subparser.description.split()) in help_text, name


# --------------------------------------------------------------------------- a closed pipe


def test_a_closed_pipe_ends_the_command_quietly(tmp_path):
    # `ggml-py tokenize ... --show | head -1`: far more output than a pipe buffers
    text = tmp_path / "text.txt"
    text.write_text("Hello, my name is GPT-J. " * 20000)
    with open(text) as stdin:
        process = ggml_py_command(
            "tokenize", TINY_MODEL, "-p", "-", "--show",
            stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        first = process.stdout.readline()
        process.stdout.close()  # as `head -1` does
        stderr = process.stderr.read()
        process.wait(timeout=120)
    assert first == "15496\t'Hello'\n"
    assert process.returncode == 141  # as if killed by SIGPIPE, like cat or grep
    assert stderr == ""  # no "Broken pipe", no "Exception ignored"


class _ClosedPipe(io.StringIO):
    def write(self, text):
        raise BrokenPipeError(32, "Broken pipe")

    def flush(self):
        raise BrokenPipeError(32, "Broken pipe")


@pytest.mark.parametrize(
    "argv", [["info", "{model}"], ["ls", str(TINY_MODEL)], ["backends"], ["--help"]]
)
def test_every_command_handles_a_closed_pipe(monkeypatch, capsys, byte_model_path, argv):
    monkeypatch.setattr(sys, "stdout", _ClosedPipe())
    assert main([arg.format(model=byte_model_path) for arg in argv]) == 141
    assert capsys.readouterr().err == ""


# ------------------------------------------------------------------------------- Ctrl-C


class _InterruptImport(importlib.abc.MetaPathFinder):
    """Ctrl-C while a module is being imported."""

    def __init__(self, name):
        self.name = name

    def find_spec(self, fullname, path, target=None):
        if fullname == self.name:
            raise KeyboardInterrupt
        return None


@pytest.mark.parametrize("module", ["ggml_py.model", "ggml_py.sampling"])
def test_ctrl_c_while_importing_exits_130_with_one_line(
    monkeypatch, capsys, byte_model_path, module
):
    monkeypatch.delitem(sys.modules, module)
    monkeypatch.setattr(sys, "meta_path", [_InterruptImport(module), *sys.meta_path])
    assert main(["run", "-m", str(byte_model_path), "-p", "x", "-n", "1"]) == 130
    out, err = capsys.readouterr()
    assert out == "" and "Traceback" not in err
    assert err.endswith("\nggml-py: error: interrupted\n") or err == "ggml-py: error: interrupted\n"


def test_ctrl_c_exits_130_with_one_line():
    # blocked reading the text from standard input, or still starting: either way one line
    process = ggml_py_command(
        "tokenize", TINY_MODEL, "-p", "-",
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    time.sleep(1.0)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130
    assert (out, err) == ("", "ggml-py: error: interrupted\n")


# ------------------------------------------------------------------ `-` is standard input


@pytest.fixture(scope="module")
def byte_model_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "bytes.bin"
    write_model_file(path, byte_model_file(n_ctx=12, eos_bias=50.0))  # greedy: <|endoftext|>
    return path


def test_tokenize_dash_reads_the_text_from_standard_input():
    result = subprocess.run(
        [sys.executable, "-m", "ggml_py", "tokenize", str(TINY_MODEL), "-p", "-"],
        input="Hello, my name is", capture_output=True, text=True, cwd=REPO,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == "15496 11 616 1438 318\n"  # GPT2TokenizerFast's ids (README)


def test_run_file_dash_reads_the_prompt_from_standard_input(byte_model_path):
    result = subprocess.run(
        [sys.executable, "-m", "ggml_py", "run", "-m", str(byte_model_path), "-p", "ab", "-f", "-",
         "-n", "1"],
        input="cd\n", capture_output=True, text=True, cwd=REPO,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == "abcd<|endoftext|>\n"  # the trailing newline removed, as with a file


# ------------------------------------------------------------------ hints and info


def test_run_on_a_checkpoint_names_the_convert_command(capsys):
    code = main(["run", "-m", str(TINY_MODEL / "pytorch_model.bin"), "-n", "1"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.splitlines()[-1] == (
        f"ggml-py: error: {TINY_MODEL / 'pytorch_model.bin'}: a PyTorch/safetensors checkpoint, "
        f"not a ggml or GGUF model file; convert its folder first: ggml-py convert {TINY_MODEL}"
    )


def test_run_on_a_hugging_face_folder_names_the_convert_command(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "-m", str(TINY_MODEL)])
    assert exit_info.value.code == 2
    assert (
        capsys.readouterr()
        .err.splitlines()[-1]
        .endswith(
            f"{TINY_MODEL}: a Hugging Face folder, not a model file; convert it first: "
            f"ggml-py convert {TINY_MODEL}"
        )
    )


def test_convert_says_a_folder_lacks_config_json(tmp_path, capsys):
    (tmp_path / "pytorch_model.bin").symlink_to(TINY_MODEL / "pytorch_model.bin")
    assert main(["convert", str(tmp_path), "--quiet"]) == 1
    assert capsys.readouterr().err == (
        f"ggml-py: error: {tmp_path}: no config.json: a Hugging Face model folder has one beside "
        "its weights\n"
    )


def _header_with(data: bytes, n_layer: int) -> bytes:
    """The same file with another n_layer in its header (magic, n_vocab, n_ctx, n_embd, n_head,
    n_layer, ...: int32 each)."""
    return data[:20] + struct.pack("<i", n_layer) + data[24:]


def _cut_after_vocabulary(data: bytes) -> bytes:
    """The file up to its first tensor: the header, then n_vocab tokens of (uint32 length, bytes)."""
    (n_vocab,) = struct.unpack_from("<i", data, 4)
    offset = 32 + 4  # header, then the vocabulary's own count
    for _ in range(n_vocab):
        offset += 4 + struct.unpack_from("<I", data, offset)[0]
    return data[:offset]


@pytest.mark.parametrize("damage", ["cut after the vocabulary", "a million layers"])
def test_info_fails_when_the_file_lacks_a_tensor_its_header_calls_for(
    tmp_path, capsys, byte_model_path, damage
):
    data = byte_model_path.read_bytes()
    (n_layer,) = struct.unpack_from("<i", data, 20)
    if damage == "cut after the vocabulary":
        data, missing = _cut_after_vocabulary(data), "transformer.wte.weight"
    else:
        data, missing = _header_with(data, 10**6), f"transformer.h.{n_layer}.ln_1.weight"
    damaged = tmp_path / "damaged.bin"
    damaged.write_bytes(data)
    started = time.perf_counter()
    code = main(["info", str(damaged)])
    out, err = capsys.readouterr()
    assert code == 1 and out.startswith(f"file:    {damaged}\n")  # still described
    assert err == f"ggml-py: error: {damaged}: tensor {missing} is missing\n"
    assert time.perf_counter() - started < 10  # not a list of ten million tensor names
    assert main(["info", str(byte_model_path)]) == 0
