"""The conformance suite every ggml-py backend must pass.

Run it against any installed backend (``ggml-py backends`` lists them)::

    pytest --pyargs ggml_py.conformance --backend NAME

The ``--backend`` option comes from the pytest plugin ``ggml_py.conformance.plugin``, which
ggml-py registers in the ``pytest11`` entry-point group, so it works from any directory once
ggml-py is installed. Without ``--backend`` the suite tests ``$GGML_PY_BACKEND``, else
``numpy-blas``.

What is checked (tolerances in ``spec/backend.md`` and at the top of each module):

- ``test_operations``: every interface operation against a float64 NumPy reference, for every
  tensor type (f32, f16, q4_0, q4_1, q5_0, q5_1, q8_0), unaligned file data, one row, odd sizes,
  matrices spanning many row blocks, masked and unmasked attention over strided cache views;
- ``test_graph``: a small random GPT-J through the real graph against a float64 forward pass,
  incremental decoding, and the context limit;
- ``test_hugging_face``: the shared tiny GPT-J's logits and greedy tokens against Hugging Face
  (golden data in ``../shared/peer`` beside the checkout, ``--peer-dir`` or ``$GGML_PY_PEER``;
  skipped when absent).
"""
