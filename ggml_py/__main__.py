"""``python -m ggml_py`` is the same as the ``ggml-py`` command."""

import sys

from ggml_py.cli import main

sys.exit(main())
