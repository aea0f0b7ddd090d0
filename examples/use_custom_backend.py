"""Run a model on a backend from another distribution: the example in examples/custom_backend.

    pip install ./examples/custom_backend
    python examples/use_custom_backend.py MODEL_FILE

Installed backends are found through the ``ggml_py.backends`` entry-point group; nothing in
ggml-py names them. ``GGML_PY_BACKEND=example-float64`` or ``ggml-py run --backend
example-float64`` select it as well.
"""

import sys

import ggml_py
from ggml_py.backend import installed_backends

for name, entry in sorted(installed_backends().items()):
    print(f"{name:16} {entry.target}  [{entry.distribution}]")

model = ggml_py.load(sys.argv[1], backend="example-float64")
print("".join(model.generate("Hello, my name is", max_tokens=16, top_k=1)))
