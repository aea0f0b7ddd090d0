"""``import ggml_py`` and the command line's start import only what they use: NumPy, ml_dtypes
and the model, tokenizer, file-format and converter modules load when first needed (the timing
itself is measured by benchmarks/startup_time.py, not here)."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import REPO, TINY_MODEL

import ggml_py

HEAVY = ["numpy", "ml_dtypes", "ggml_py.model", "ggml_py.tokenizer", "ggml_py.formats",
         "ggml_py.convert", "ggml_py.checkpoint", "ggml_py.backend"]  # fmt: skip


def loaded_after(code: str) -> list[str]:
    """The HEAVY modules imported by running ``code`` in a fresh interpreter."""
    script = (
        f"{code}\nimport json, sys\nprint(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def test_import_ggml_py_loads_none_of_the_heavy_modules():
    assert loaded_after("import ggml_py") == []


def test_command_line_version_and_help_load_none_of_the_heavy_modules():
    for argv in (["--version"], ["--help"], ["run", "--help"]):
        code = (
            "import contextlib, io\n"
            "from ggml_py.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
            f"    main({argv!r})"
        )
        assert loaded_after(code) == [], argv


def test_public_names_load_on_first_use():
    for name in ggml_py.__all__:
        assert getattr(ggml_py, name) is not None
        assert name in dir(ggml_py)
    assert ggml_py.Tokenizer.__module__ == "ggml_py.tokenizer"
    assert loaded_after("import ggml_py\nggml_py.Tokenizer") == ["ggml_py.tokenizer"]


def test_unknown_attribute_is_an_attribute_error():
    try:
        ggml_py.no_such_name  # noqa: B018
    except AttributeError as error:
        assert "no_such_name" in str(error)
    else:
        raise AssertionError("no AttributeError")


def test_ml_dtypes_is_imported_only_for_a_checkpoint_that_holds_its_types():
    read_f16 = f"import ggml_py\nggml_py.load_state_dict({str(TINY_MODEL)!r})"
    assert "ml_dtypes" not in loaded_after(read_f16)
    bf16 = REPO / "tests" / "fixtures" / "checkpoints" / "dtypes.pt"
    read_bf16 = f"import ggml_py\nprint(ggml_py.open_checkpoint({str(bf16)!r})['t_bfloat16'].dtype)"
    assert "ml_dtypes" in loaded_after(read_bf16)
