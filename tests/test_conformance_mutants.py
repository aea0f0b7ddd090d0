"""The conformance suite fails on deliberately broken backends, naming the broken operation.

Each backend of ``conformance_mutants.py`` is ``numpy-blas`` with one bug. It is registered for
these tests only (an entry-point folder on ``sys.path``), and the part of the suite that must
catch it runs in-process with ``-x``: the first failure must come from ``test_operations`` and
name the operation (and what is wrong), as a backend author would see it.
"""

from __future__ import annotations

import conformance_mutants
import pytest

pytest_plugins = ["pytester"]

# mutant class, the tests that must catch it (-k; empty: the whole suite), words the failure
# message must contain
MUTANTS = [
    ("LinearDropsTokensPast32", "token_counts", ["linear(x [33,"]),
    ("AttentionWindowOf64", "attention_matches", ["attention(H 4, T 1, S 65"]),
    ("AttentionSeesOneFuturePosition", "attention_matches", ["attention(H 4, T 5, S 5"]),
    ("SoftmaxWithoutMaxSubtraction", "softmax", ["attention(", "overflowing exp", "finite"]),
    ("SoftmaxMaxTakenBeforeMask", "softmax", ["attention(", "masked keys far above"]),
    ("FortranOrderLinear", "linear_matches", ["linear(", "not C-contiguous"]),
    ("GeluInPlace", "gelu", ["gelu(x", "shares memory with input 0"]),
    ("LayerNormCentersTheInput", "layer_norm", ["layer_norm(x", "modified input 0"]),
    ("LinearReusesItsOutputBuffer", "linear_matches", ["linear(", "two calls returned the same memory"]),
    ("EmbeddingReturnsAView", "embedding_returns", ["embedding(table", "two calls returned the same memory"]),
    # the whole suite with -x: the first failure is the operation, not a model's logits
    ("EmbeddingIdsAsInt16", "", ["embedding(table f32 [50400, 32]", "values differ from the decoded rows"]),
    ("LinearFlushesSubnormals", "subnormal", ["linear(x one-hot", "f16", "is not exact"]),
    ("LinearLosesNaN", "infinite_and_nan", ["linear(", "finite where the reference is not"]),
    ("LinearRoundsActivationsToF16", "linear_matches", ["linear(", "max |error|"]),
    ("LinearSumsInAVaryingOrder", "linear_matches", ["linear(", "two identical calls gave different results"]),
    ("LinearSplitDropsTheRemainderRows", "every_operation_with_1_to_4_threads and 3", ["linear(", "3 threads"]),
    ("LinearSkipsThePartialRowBlock", "linear_matches", ["linear(x", "W f32 [1537, 256]"]),
    ("GeluTanhThroughExp", "gelu", ["gelu(x", "finite where the reference is not"]),
]  # fmt: skip


@pytest.fixture(scope="module")
def mutants_registered(tmp_path_factory):
    """An entry-point folder naming every mutant as a ggml-py backend, on ``sys.path``."""
    folder = tmp_path_factory.mktemp("mutants")
    info = folder / "ggml_py_conformance_mutants-0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: ggml-py-conformance-mutants\nVersion: 0\n"
    )
    lines = [f"mutant-{name} = conformance_mutants:{name}" for name, _, _ in MUTANTS]
    (info / "entry_points.txt").write_text("[ggml_py.backends]\n" + "\n".join(lines) + "\n")
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(folder))
        yield


def test_every_mutant_is_a_real_backend():
    names = {name for name, _, _ in MUTANTS}
    defined = {
        name
        for name, value in vars(conformance_mutants).items()
        if isinstance(value, type) and name[0].isupper()
    }
    assert names == defined - {"NumpyBlasBackend"}


@pytest.mark.parametrize("mutant, selection, words", MUTANTS, ids=[m[0] for m in MUTANTS])
def test_the_suite_catches_the_mutant_and_names_the_operation(
    pytester, mutants_registered, mutant, selection, words
):
    selected = ["-k", selection] if selection else []
    recorded = pytester.inline_run(
        "-p", "no:cacheprovider", "--pyargs", "ggml_py.conformance", "-x", *selected,
        "--ggml-py-backend", f"mutant-{mutant}",
    )  # fmt: skip
    failures = recorded.getfailures()
    assert failures, f"{mutant}: the suite passed ({selection})"
    (report,) = failures
    assert "test_operations.py::" in report.nodeid, report.nodeid
    message = str(report.longrepr)
    missing = [word for word in words if word not in message]
    assert not missing, f"{mutant}: the failure does not say {missing}:\n{message[-2000:]}"
