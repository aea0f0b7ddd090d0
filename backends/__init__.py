"""Concrete inference backends shipped with ggml-py (``numpy-blas``, ``blocked-f16``).

The repository folder ``backends/`` installs as the package ``ggml_py_backends`` (setuptools
``package-dir``), so a project's own ``backends`` package cannot shadow it. The backends are
found through the ``ggml_py.backends`` entry-point group like any third-party backend; the graph
in ``ggml_py.model`` never imports this package.
"""
