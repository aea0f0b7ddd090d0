"""The conformance suite every ggml-py backend must pass.

Run it against any installed backend (``ggml-py backends`` lists them)::

    pytest --pyargs ggml_py.conformance --ggml-py-backend NAME

Without ``--ggml-py-backend`` the suite tests ``$GGML_PY_BACKEND``, else ``auto``. The
option comes from the pytest plugin ``_ggml_py_pytest_plugin``, which ggml-py registers in the
``pytest11`` entry-point group, so it works from any directory once ggml-py is installed. The
golden data the suite needs ships in ``data/``; ``--ggml-py-golden-dir DIR`` (or
``$GGML_PY_GOLDEN_DIR``) adds the tests of a larger data set, a folder holding ``tiny-gptj/``.
Both spellings of the option work; ``--ggml-py-golden-dir=DIR`` also leaves pytest's rootdir
alone (pytest picks it before loading plugins and takes a separate ``DIR`` for a test path).

What is checked, in this order (tolerances in ``spec/backend.md`` and at the top of each module):

- ``test_operations``: every interface operation against a float64 NumPy reference and the
  output contract (float32, C-contiguous, the documented shape, new arrays, inputs unchanged,
  the same bits on every call), for every tensor type (f32, f16, q4_0, q4_1, q5_0, q5_1, q8_0);
- ``test_graph``: a small random GPT-J through the real graph against a float64 forward pass,
  incremental decoding, and the context limit;
- ``test_hugging_face``: the files of a small GPT-J (every type) against Hugging Face's logits,
  prompts of 5, 70 and 288 tokens (its whole context), and greedy tokens;
- ``test_golden_dir``: only with a golden data folder, its ``tiny-gptj`` files (GPT-J's 50400
  tokens) against Hugging Face and ggml.
"""
