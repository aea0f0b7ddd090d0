"""``ggml-py tokenize``: ids and pieces from a Hugging Face folder or a ggml model file."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import REPO

from ggml_py.cli import main

# Ids below are GPT2TokenizerFast's (transformers 5.24, examples/tiny-gptj); "Hello, my name is" is
# also in shared/peer/tiny-gptj/README.md.
HELLO_IDS = "15496 11 616 1438 318"


def test_ids_from_hugging_face_folder(tiny_model_dir, capsys):
    assert main(["tokenize", str(tiny_model_dir), "-p", "Hello, my name is"]) == 0
    assert capsys.readouterr().out == HELLO_IDS + "\n"


def test_ids_from_ggml_model_file(peer, capsys):
    model_file = peer / "tiny-gptj" / "ggml-model-f16.bin"
    assert main(["tokenize", str(model_file), "-p", "<|endoftext|>Once upon a time"]) == 0
    assert capsys.readouterr().out == "50256 7454 2402 257 640\n"


def test_show_prints_each_piece(tiny_model_dir, capsys):
    assert main(["tokenize", str(tiny_model_dir), "-p", "Hi “q”\n", "--show"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "17250\t'Hi'",
        "564\t' \\xe2\\x80'",  # the curly quote's bytes are split over two tokens
        "250\t'\\x9c'",
        "80\t'q'",
        "447\t'\\xe2\\x80'",
        "251\t'\\x9d'",
        "198\t'\\n'",
    ]


@pytest.mark.skipif(os.name != "posix", reason="argv bytes are only passed through on POSIX")
def test_invalid_utf8_argument_becomes_replacement_character(tiny_model_dir):
    result = subprocess.run(
        [
            sys.executable.encode(),
            b"-m",
            b"ggml_py",
            b"tokenize",
            os.fsencode(tiny_model_dir),
            b"-p",
            b"a\xffb",
            b"--show",
        ],
        capture_output=True,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().splitlines() == ["64\t'a'", "4210\t'\ufffd'", "65\t'b'"]


def test_folder_without_tokenizer_is_a_one_line_error(tmp_path, capsys):
    assert main(["tokenize", str(tmp_path), "-p", "x"]) == 1
    error = capsys.readouterr().err
    assert (
        error == f"ggml-py: error: {tmp_path}: no vocab.json: not a GPT-2/GPT-J tokenizer folder\n"
    )


def test_missing_model_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["tokenize", str(tmp_path / "missing"), "-p", "x"])
    assert exit_info.value.code == 2
