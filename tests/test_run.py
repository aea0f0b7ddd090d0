"""``ggml-py run``: ggml gpt-j's flags, streamed text on stdout, ggml's timing block on stderr."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
from conftest import REPO, needs_numba
from test_model import byte_model_file, write_model_file

from ggml_py.cli import main

TIMING_LINES = [
    r"main: mem per token = [ \d]{8,} bytes",
    r"main:     load time = [ \d]{5,}\.\d\d ms",
    r"main:   sample time = [ \d]{5,}\.\d\d ms",
    r"main:  predict time = [ \d]{5,}\.\d\d ms / \d+\.\d\d ms per token",
    r"main:    total time = [ \d]{5,}\.\d\d ms",
]


@pytest.fixture(scope="module")
def byte_model_path(tmp_path_factory):
    """A random 12-position GPT-J over single bytes plus <|endoftext|>."""
    path = tmp_path_factory.mktemp("models") / "bytes.bin"
    write_model_file(path, byte_model_file(n_ctx=12))
    return path


@pytest.fixture(scope="module")
def eos_model_path(tmp_path_factory):
    """The same, except that greedy decoding always picks <|endoftext|>."""
    path = tmp_path_factory.mktemp("models") / "eos.bin"
    write_model_file(path, byte_model_file(n_ctx=12, eos_bias=50.0))
    return path


def as_line(text: str) -> str:
    """What `run` prints for ``text``: its output ends with a newline."""
    return text if text.endswith("\n") else text + "\n"


def run(capsys, *args):
    code = main(["run", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("backend", ["blocked-f16", pytest.param("numba", marks=needs_numba)])
@pytest.mark.parametrize("prompt_index", [0, 1, 2, 3])
def test_greedy_run_on_the_f16_file_prints_hugging_faces_continuation(
    peer, expected, prompt_index, backend
):
    prompt = expected["prompts"][prompt_index]
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "ggml_py",
            "run",
            "-m",
            str(peer / "tiny-gptj" / "ggml-model-f16.bin"),
            "-p",
            prompt["text"],
            "-n",
            "24",
            "--top_k",
            "1",
            "-s",
            "1",
            "-t",
            "2",
            "--backend",
            backend,
        ],
        capture_output=True,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.decode("utf-8") == as_line(prompt["text"] + prompt["hf_greedy_text"])


def test_timing_block_uses_ggml_formats_and_counts_like_ggml(capsys, byte_model_path):
    code, out, err = run(
        capsys, "-m", byte_model_path, "-p", "Hello", "-n", "4", "-s", "3", "--ignore-eos"
    )
    assert code == 0 and out.startswith("Hello")
    lines = err.splitlines()
    assert "main: seed = 3" in lines and "main: number of tokens in prompt = 5" in lines
    block = lines[-5:]
    for line, pattern in zip(block, TIMING_LINES, strict=True):
        assert re.fullmatch(pattern, line), line
    predict, per_token = map(float, re.findall(r"(\d+\.\d\d) ms", block[3]))
    assert per_token == pytest.approx(
        predict / (5 + 4 - 1), abs=0.006
    )  # n_past: last token never evaluated


@pytest.mark.parametrize(
    "cpus, flags, expected",
    [(3, [], 3), (8, [], 4), (3, ["-t", "2"], 2), (3, ["-t", "16"], 3), (8, ["-t", "6"], 6)],
)
def test_threads_are_4_or_t_but_at_most_the_cpus_the_process_may_use(
    capsys, byte_model_path, monkeypatch, cpus, flags, expected
):
    # the process's CPU affinity, not the machine's CPU count: more threads would take turns
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cpus)), raising=False)
    code, _, err = run(
        capsys, "-m", byte_model_path, "-p", "Hi", "-n", "1", "--backend", "blocked-f16", *flags
    )
    assert code == 0
    assert f"main: backend = blocked-f16, {expected} threads" in err.splitlines()


def test_same_seed_same_output(capsys, byte_model_path):
    outputs = [
        run(capsys, "-m", byte_model_path, "-p", "Hi", "-s", seed, "--ignore-eos")[1]
        for seed in (5, 5, 6)
    ]
    assert outputs[0] == outputs[1] != outputs[2]
    assert outputs[0].startswith("Hi")


def test_end_of_text_stops_the_run_unless_ignored(capsys, eos_model_path):
    assert run(capsys, "-m", eos_model_path, "-p", "Hi", "-n", "5")[1] == "Hi<|endoftext|>\n"
    assert (
        run(capsys, "-m", eos_model_path, "-p", "Hi", "-n", "3", "--ignore-eos")[1]
        == "Hi" + "<|endoftext|>" * 3 + "\n"
    )


def test_generation_stops_cleanly_at_the_context_limit(capsys, eos_model_path):
    code, out, err = run(
        capsys, "-m", eos_model_path, "-p", "0123456789", "-n", "100", "--ignore-eos"
    )
    assert code == 0
    assert out == "0123456789" + "<|endoftext|>" * 2 + "\n"  # 12 positions in all


def test_prompt_longer_than_the_context_is_a_one_line_error(capsys, eos_model_path):
    code, out, err = run(capsys, "-m", eos_model_path, "-p", "0123456789abc")
    assert code == 1 and out == ""
    error_lines = [line for line in err.splitlines() if line.startswith("ggml-py: error:")]
    assert error_lines == [
        f"ggml-py: error: {eos_model_path}: the prompt has 13 tokens but the context holds 12"
    ]


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--top_p", "1.5"], "top_p must be in (0, 1], got 1.5"),
        (["--temp", "nan"], "temperature must be a finite number (0 or less: greedy), got nan"),
        (["--top_k", "0"], "top_k must be at least 1, got 0"),
        (["--repeat-penalty", "-1"], "repeat_penalty must be a positive number, got -1.0"),
        (["-b", "0"], "argument -b/--batch_size: must be at least 1, got 0"),
        (["-t", "0"], "argument -t/--threads: must be at least 1, got 0"),
        (["--backend", "nonexistent"], "argument --backend: unknown backend 'nonexistent'"),
    ],
)
def test_invalid_values_are_usage_errors_before_any_output(capsys, byte_model_path, flags, message):
    with pytest.raises(SystemExit) as exit_info:
        run(capsys, "-m", byte_model_path, "-p", "x", *flags)
    out, err = capsys.readouterr()
    assert exit_info.value.code == 2 and out == ""
    assert err.startswith("usage: ggml-py run ")  # no seed line before it
    assert err.splitlines()[-1].startswith(f"ggml-py run: error: {message}")


@pytest.mark.parametrize("temp", ["0", "-0.5"])
def test_temperature_zero_or_less_is_greedy_like_top_k_1(capsys, byte_model_path, temp):
    greedy = run(
        capsys, "-m", byte_model_path, "-p", "ab", "-s", "7", "--top_k", "1", "--ignore-eos"
    )
    zero = run(capsys, "-m", byte_model_path, "-p", "ab", "-s", "8", "--temp", temp, "--ignore-eos")
    assert zero[0] == 0 and zero[1] == greedy[1]
    hot = run(capsys, "-m", byte_model_path, "-p", "ab", "-s", "7", "--temp", "5", "--ignore-eos")
    assert hot[1] != greedy[1]  # the flags do sample otherwise


def test_file_text_is_appended_without_its_trailing_newline(capsys, eos_model_path, tmp_path):
    prompt_file = tmp_path / "prompt.txt"
    prompt_file.write_text("cd\n")
    assert (
        run(capsys, "-m", eos_model_path, "-p", "ab", "-f", prompt_file)[1] == "abcd<|endoftext|>\n"
    )


def test_empty_prompt_becomes_ggmls_random_prompt_chosen_by_the_seed(capsys, eos_model_path):
    golden = json.loads((REPO / "tests" / "fixtures" / "sampling" / "libstdcxx.json").read_text())
    first_output = golden["mt19937_first_outputs"]["42"][0]  # std::mt19937(42)() from libstdc++
    prompts = [
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
    out = run(capsys, "-m", eos_model_path, "-s", "42", "-n", "1")[1]
    assert out == prompts[first_output % 10] + "<|endoftext|>\n"


def test_zero_tokens_prints_the_prompt_only(capsys, byte_model_path):
    code, out, err = run(capsys, "-m", byte_model_path, "-p", "abc", "-n", "0")
    assert (code, out) == (0, "abc\n")


def test_repeat_penalty_changes_greedy_output(capsys, byte_model_path):
    plain = run(capsys, "-m", byte_model_path, "-p", "aaaa", "--top_k", "1", "--ignore-eos")[1]
    penalised = run(
        capsys,
        "-m",
        byte_model_path,
        "-p",
        "aaaa",
        "--top_k",
        "1",
        "--ignore-eos",
        "--repeat-penalty",
        "1000",
    )[1]
    assert plain != penalised


def test_convert_and_run_example_prints_hugging_faces_greedy_text(expected):
    result = subprocess.run(
        [sys.executable, str(REPO / "examples" / "convert_and_run.py")],
        capture_output=True,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr.decode()
    prompt = expected["prompts"][0]
    assert result.stdout.decode("utf-8") == prompt["text"] + prompt["hf_greedy_text"] + "\n"


def test_streaming_example_runs(byte_model_path):
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "examples" / "stream_from_python.py"),
            str(byte_model_path),
            "abc",
        ],
        capture_output=True,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr.decode()
    lines = result.stdout.decode("utf-8", errors="replace").splitlines()
    assert lines[0].startswith("abc") and lines[-1].startswith("greedy next tokens: ")
