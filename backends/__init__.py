"""Concrete inference backends shipped with ggml-py (``numpy-blas``, ``blocked-f16``).

They are found through the ``ggml_py.backends`` entry-point group like any third-party backend;
the graph in ``ggml_py.model`` never imports this package.
"""
