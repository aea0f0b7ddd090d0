"""Bad command-line input, for every subcommand (the table is in spec/robustness.md).

Usage errors (what argparse can tell from the arguments: a missing path, a folder where a file is
expected, an unknown type or format, a prompt that is not UTF-8) exit with 2 after the usage and
one ``ggml-py <command>: error: ...`` line. Runtime failures (a file that is unreadable or not
what it should be, values the sampler cannot use, a prompt longer than the context) exit with 1
and print exactly one ``ggml-py: error: ...`` line. Never a traceback, except with ``--debug``.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys

import pytest
from conftest import REPO, TINY_MODEL
from fuzz.seeds import model_seeds

from ggml_py.cli import main


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A small ggml model (64 positions, 300 tokens), its GGUF form, a checkpoint, a text file."""
    folder = tmp_path_factory.mktemp("cli")
    seeds = model_seeds()
    (folder / "model.bin").write_bytes(seeds["q4_0.bin"])
    (folder / "f16.bin").write_bytes(seeds["f16.bin"])
    (folder / "model.gguf").write_bytes(seeds["q4_0.gguf"])
    (folder / "text.txt").write_text("not a model\n")
    (folder / "empty").write_bytes(b"")
    (folder / "f16-link.bin").symlink_to(folder / "f16.bin")
    (folder / "empty_folder").mkdir()
    (folder / "folder").mkdir()
    shutil.copy(TINY_MODEL / "config.json", folder / "folder" / "config.json")
    return folder


def cli(capsys, *argv):
    """(exit code, stdout, stderr) of ``ggml-py argv`` run in this process."""
    try:
        code = main([str(arg) for arg in argv])
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


def assert_usage_error(result, command: str, message: str) -> None:
    code, out, err = result
    assert code == 2 and out == ""
    assert "Traceback" not in err
    assert err.splitlines()[-1].startswith(f"ggml-py {command}: error: {message}"), (
        err
    )  # argparse may add a hint


def assert_runtime_error(result, message: str) -> None:
    code, out, err = result
    assert code == 1 and "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("ggml-py: error: ")]
    assert errors == [f"ggml-py: error: {message}"], err
    assert err.endswith(errors[0] + "\n")


# ------------------------------------------------------------------------------- usage errors: 2

USAGE_ERRORS = [
    ("ls", ["{missing}"], "argument path: {missing}: no such file or folder"),
    ("info", ["{missing}"], "argument file: {missing}: no such file or folder"),
    (
        "info",
        ["{dir}/folder"],
        "argument file: "
        "{dir}/folder: a Hugging Face folder, not a model file; convert it first: ggml-py convert {dir}/folder",
    ),
    (
        "info",
        ["{dir}/empty_folder"],
        "argument file: {dir}/empty_folder: is a folder, a file is expected",
    ),
    ("tokenize", ["{missing}", "-p", "x"], "argument model: {missing}: no such file or folder"),
    ("tokenize", ["{dir}/model.bin"], "the following arguments are required: -p/--prompt"),
    ("convert", ["{missing}"], "argument HF_DIR|FILE: {missing}: no such file or folder"),
    (
        "convert",
        ["{dir}/folder", "--outtype", "q3_k"],
        "argument --outtype: unknown type 'q3_k'; choose one of f32 (0), f16 (1), q4_0 (2), "
        "q4_1 (3), q5_0 (8), q5_1 (9), q8_0 (7)",
    ),
    (
        "convert",
        ["{dir}/folder", "--format", "safetensors"],
        "argument --format: invalid choice: 'safetensors' (choose from ",
    ),
    (
        "convert",
        ["{dir}/folder", "--outfile", "{dir}/no/such/out.bin"],
        "argument --outfile: {dir}/no/such/out.bin: no such folder {dir}/no/such",
    ),
    (
        "convert",
        ["{dir}/folder", "--outfile", "{dir}/folder"],
        "argument --outfile: {dir}/folder: is a folder, give the path of the file to write",
    ),
    (
        "quantize",
        ["{missing}", "{dir}/out.bin", "q4_0"],
        "argument input: {missing}: no such file or folder",
    ),
    (
        "quantize",
        ["{dir}/folder", "{dir}/out.bin", "q4_0"],
        "argument input: "
        "{dir}/folder: a Hugging Face folder, not a model file; convert it first: ggml-py convert {dir}/folder",
    ),
    (
        "quantize",
        ["{dir}/f16.bin", "{dir}/out.bin", "f16"],
        "argument type: unknown type 'f16'; choose one of q4_0 (2), q4_1 (3), q5_0 (8), q5_1 (9), q8_0 (7)",
    ),
    (
        "quantize",
        ["{dir}/f16.bin", "{dir}/out.bin", "42"],
        "argument type: unknown type '42'; choose one of q4_0 (2), q4_1 (3), q5_0 (8), q5_1 (9), q8_0 (7)",
    ),
    (
        "quantize",
        ["{dir}/f16.bin", "{dir}/folder", "q4_0"],
        "argument output: {dir}/folder: is a folder, give the path of the file to write",
    ),
    ("run", ["-p", "x"], "the following arguments are required: -m/--model"),
    ("run", ["-m", "{missing}"], "argument -m/--model: {missing}: no such file or folder"),
    (
        "run",
        ["-m", "{dir}/folder"],
        "argument -m/--model: "
        "{dir}/folder: a Hugging Face folder, not a model file; convert it first: ggml-py convert {dir}/folder",
    ),
    (
        "run",
        ["-m", "{dir}/model.bin", "-n", "many"],
        "argument -n/--n_predict: invalid int value: 'many'",
    ),
    (
        "run",
        ["-m", "{dir}/model.bin", "--temp", "hot"],
        "argument --temp: invalid float value: 'hot'",
    ),
    (
        "run",
        ["-m", "{dir}/model.bin", "-p", "a\udcffb"],
        "argument -p/--prompt: not valid UTF-8 (byte 0xff at byte 1 of the argument)",
    ),
    (
        "run",
        ["-m", "{dir}/model.bin", "-f", "{missing}"],
        "argument -f/--file: {missing}: no such file or folder",
    ),
    (
        "run",
        ["-m", "{dir}/model.bin", "-f", "{dir}/folder"],
        "argument -f/--file: {dir}/folder: is a folder, a file is expected",
    ),
    ("run", ["-m", "{dir}/model.bin", "--top_p", "0"], "top_p must be in (0, 1], got 0.0"),
    ("run", ["-m", "{dir}/model.bin", "--top_p", "nan"], "top_p must be in (0, 1], got nan"),
    (
        "run",
        ["-m", "{dir}/model.bin", "--temp", "inf"],
        "temperature must be a finite number (0 or less: greedy), got inf",
    ),
    ("run", ["-m", "{dir}/model.bin", "--top_k", "-5"], "top_k must be at least 1, got -5"),
    (
        "run",
        ["-m", "{dir}/model.bin", "--repeat-last-n", "-1"],
        "repeat_last_n must be at least 0, got -1",
    ),
    (
        "run",
        ["-m", "{dir}/model.bin", "--repeat-penalty", "0"],
        "repeat_penalty must be a positive number, got 0.0",
    ),
    (
        "run",
        ["-m", "{dir}/model.bin", "-n", "-1"],
        "argument -n/--n_predict: must be at least 0, got -1",
    ),
    (
        "run",
        ["-m", "{dir}/model.bin", "-b", "0"],
        "argument -b/--batch_size: must be at least 1, got 0",
    ),
    (
        "run",
        ["-m", "{dir}/model.bin", "-t", "0"],
        "argument -t/--threads: must be at least 1, got 0",
    ),
    (
        "run",
        ["-m", "{dir}/model.bin", "--backend", "nope"],
        "argument --backend: unknown backend 'nope' (installed: {backends})",
    ),
    (
        "convert",
        ["{dir}/model.bin"],
        "{dir}/model.bin: a model file can only be converted to GGUF (--format gguf)",
    ),
    (
        "convert",
        ["{dir}/model.bin", "--format", "gguf", "--outtype", "f16"],
        "{dir}/model.bin: --outtype is for folders; a model file keeps its tensor types",
    ),
    (
        "convert",
        ["{dir}/model.bin", "--format", "gguf", "--outfile", "{dir}/model.bin"],
        "{dir}/model.bin: is the same file as the input {dir}/model.bin; writing it would destroy the input",
    ),
    (
        "convert",
        ["{dir}/folder", "--outfile", "{dir}/folder/config.json"],
        "{dir}/folder/config.json: a file of the folder being converted; writing it would destroy the input",
    ),
    (
        "quantize",
        ["{dir}/f16.bin", "{dir}/f16.bin", "q8_0"],
        "{dir}/f16.bin: is the same file as the input {dir}/f16.bin; writing it would destroy the input",
    ),
    (
        "quantize",
        ["{dir}/f16.bin", "{dir}/f16-link.bin", "q8_0"],
        "{dir}/f16-link.bin: is the same file as the input {dir}/f16.bin; writing it would destroy the input",
    ),
    ("backends", ["--all"], "unrecognized arguments: --all"),
]


@pytest.mark.parametrize(
    "command, arguments, message",
    USAGE_ERRORS,
    ids=[f"{case[0]}-{' '.join(case[1])}" for case in USAGE_ERRORS],
)
def test_usage_errors_exit_2(capsys, files, command, arguments, message):
    from ggml_py.backend import installed_backends

    fill = {
        "dir": files,
        "missing": files / "missing.bin",
        "backends": ", ".join(sorted(installed_backends())),
    }
    result = cli(capsys, command, *[argument.format(**fill) for argument in arguments])
    expected = message.format(**fill)
    if command == "backends":  # argparse reports unknown arguments from the top-level parser
        assert result[0] == 2 and result[2].splitlines()[-1] == f"ggml-py: error: {expected}"
    else:
        assert_usage_error(result, command, expected)


# ---------------------------------------------------------------------------- runtime errors: 1

RUNTIME_ERRORS = [
    (
        "ls",
        ["{dir}/folder"],
        "{dir}/folder: no weights in the folder (looked for model.safetensors, "
        "model.safetensors.index.json, pytorch_model.bin, pytorch_model.bin.index.json)",
    ),
    (
        "ls",
        ["{dir}/model.bin"],
        "{dir}/model.bin: not a checkpoint (unknown format, first bytes 6c 6d 67 67 2c 01 00 00) "
        "(at byte 0)",
    ),
    ("ls", ["{dir}/empty"], "{dir}/empty: empty file (at byte 0)"),
    (
        "info",
        ["{dir}/text.txt"],
        "{dir}/text.txt: not a ggml GPT-J model file or a GGUF file (magic bytes 6e6f7420) (at byte 0)",
    ),
    (
        "info",
        ["{dir}/empty"],
        "{dir}/empty: file of 0 bytes is too short for a model file (at byte 0)",
    ),
    (
        "tokenize",
        ["{dir}/folder", "-p", "x"],
        "{dir}/folder: no vocab.json: not a GPT-2/GPT-J tokenizer folder",
    ),
    (
        "tokenize",
        ["{dir}/text.txt", "-p", "x"],
        "{dir}/text.txt: not a ggml GPT-J model file or a GGUF file (magic bytes 6e6f7420) (at byte 0)",
    ),
    (
        "convert",
        ["{dir}/folder", "--outfile", "{dir}/out.bin"],
        "{dir}/folder: no weights in the folder (looked for "
        "model.safetensors, model.safetensors.index.json, pytorch_model.bin, pytorch_model.bin.index.json)",
    ),
    (
        "quantize",
        ["{dir}/model.bin", "{dir}/out.bin", "q8_0"],
        "{dir}/model.bin: tensor 'transformer.wte.weight' is q4_0; quantize needs f32 or f16 input (at byte {wte})",
    ),
    (
        "quantize",
        ["{dir}/model.gguf", "{dir}/out.bin", "q8_0"],
        "{dir}/model.gguf: quantize reads legacy ggml GPT-J files, this is a gguf file",
    ),
    (
        "quantize",
        ["{dir}/text.txt", "{dir}/out.bin", "q8_0"],
        "{dir}/text.txt: not a ggml GPT-J model file or a GGUF file (magic bytes 6e6f7420) (at byte 0)",
    ),
    (
        "run",
        ["-m", "{dir}/text.txt"],
        "{dir}/text.txt: not a ggml GPT-J model file or a GGUF file (magic bytes 6e6f7420) "
        "(at byte 0)",
    ),
    (
        "run",
        ["-m", "{dir}/model.bin", "-p", "ab " * 40],
        "{dir}/model.bin: the prompt has 81 tokens but the context holds 64",
    ),
]


@pytest.mark.parametrize(
    "command, arguments, message",
    RUNTIME_ERRORS,
    ids=[f"{case[0]}-{' '.join(case[1])[:40]}" for case in RUNTIME_ERRORS],
)
def test_runtime_errors_exit_1_with_one_line(capsys, files, command, arguments, message):
    from ggml_py.backend import installed_backends
    from ggml_py.formats import open_model

    fill = {
        "dir": files,
        "missing": files / "missing.txt",
        "wte": open_model(files / "model.bin").tensors["transformer.wte.weight"].offset,
        "backends": ", ".join(sorted(installed_backends())),
    }
    result = cli(capsys, command, *[argument.format(**fill) for argument in arguments])
    assert_runtime_error(result, message.format(**fill))
    assert not (files / "out.bin").exists()


def test_n_predict_beyond_the_context_is_clamped_like_ggml_with_a_warning(capsys, files):
    code, out, err = cli(
        capsys,
        "run",
        "-m",
        files / "model.bin",
        "-p",
        "ab ab",
        "-n",
        "1000",
        "-s",
        "1",
        "--ignore-eos",
    )
    assert code == 0 and out.startswith("ab ab")
    warnings = [line for line in err.splitlines() if line.startswith("ggml-py: warning: ")]
    assert warnings == [
        "ggml-py: warning: -n 1000 is beyond the context: 64 positions, 4 taken by the prompt, "
        "so at most 60 tokens are generated"
    ]


# --------------------------------------------------------------------------- unreadable files


def unreadable_run(argv, path):
    """Run the CLI where ``path`` cannot be read: as an ordinary user it is chmod 000; as root
    (who reads anything) the process drops its capabilities to bypass file permissions."""
    path.chmod(0)
    try:
        command = [sys.executable, "-m", "ggml_py", *argv]
        if os.geteuid() == 0:
            setpriv = shutil.which("setpriv")
            if setpriv is None:
                pytest.skip("running as root without setpriv: no way to make a file unreadable")
            command = [
                setpriv,
                "--securebits=+noroot,+noroot_locked",
                "--inh-caps=-all",
                "--bounding-set=-dac_override,-dac_read_search",
                "--",
                *command,
            ]
        return subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    finally:
        path.chmod(stat.S_IRUSR | stat.S_IWUSR)


@pytest.mark.parametrize(
    "argv",
    [
        ["ls", "{path}"],
        ["info", "{path}"],
        ["tokenize", "{path}", "-p", "x"],
        ["convert", "{path}", "--format", "gguf"],
        ["quantize", "{path}", "{out}", "q4_0"],
        ["run", "-m", "{path}", "-p", "x"],
    ],
)
def test_unreadable_files_are_one_line_runtime_errors(tmp_path, files, argv):
    path = tmp_path / "model.bin"
    path.write_bytes((files / "f16.bin").read_bytes())
    result = unreadable_run(
        [argument.format(path=path, out=tmp_path / "out.bin") for argument in argv], path
    )
    assert result.returncode == 1, result.stderr
    assert result.stderr.splitlines()[-1] == f"ggml-py: error: {path}: Permission denied", (
        result.stderr
    )
    assert "Traceback" not in result.stderr and not (tmp_path / "out.bin").exists()


# ----------------------------------------------------------------------------------- --debug


def test_debug_shows_the_traceback_and_nothing_else_does(files):
    argv = [sys.executable, "-m", "ggml_py", "info", str(files / "text.txt")]
    plain = subprocess.run(argv, capture_output=True, text=True, cwd=REPO)
    debug = subprocess.run(
        argv[:3] + ["--debug"] + argv[3:], capture_output=True, text=True, cwd=REPO
    )
    assert (
        plain.returncode == 1
        and "Traceback" not in plain.stderr
        and len(plain.stderr.splitlines()) == 1
    )
    assert (
        debug.returncode == 1
        and debug.stderr.startswith("Traceback")
        and "ModelFileError" in debug.stderr
    )


@pytest.mark.skipif(os.name != "posix", reason="argv bytes are only passed through on POSIX")
def test_prompt_bytes_that_are_not_utf8_are_a_usage_error_before_loading(files):
    result = subprocess.run(
        [
            sys.executable.encode(),
            b"-m",
            b"ggml_py",
            b"run",
            b"-m",
            os.fsencode(files / "model.bin"),
            b"-p",
            b"\xe2\x80",
        ],
        capture_output=True,
        cwd=REPO,
    )
    assert result.returncode == 2 and result.stdout == b""
    assert (
        result.stderr.decode().splitlines()[-1]
        == "ggml-py run: error: argument -p/--prompt: not valid UTF-8 (byte 0xe2 at byte 0 of the argument)"
    )
    assert b"main: seed" not in result.stderr  # refused before anything ran
