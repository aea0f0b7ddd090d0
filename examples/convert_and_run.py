"""Convert the GPT-J that ships in examples/tiny-gptj to a ggml f16 file and generate from it.

    python examples/convert_and_run.py [PROMPT]

The same as ``ggml-py convert examples/tiny-gptj --outfile F`` followed by
``ggml-py run -m F -p PROMPT --top_k 1 -n 24``. The tiny model has random weights, so the text is
nonsense, but it is exactly what Hugging Face transformers generates from the same checkpoint.
"""

import sys
import tempfile
from pathlib import Path

import ggml_py
from ggml_py.convert import convert_hf

HERE = Path(__file__).resolve().parent

prompt = sys.argv[1] if len(sys.argv) > 1 else "Hello, my name is"
with tempfile.TemporaryDirectory() as folder:
    path = convert_hf(HERE / "tiny-gptj", outfile=Path(folder) / "tiny-gptj-f16.bin")
    model = ggml_py.load(path)
    print(prompt + "".join(model.generate(prompt, max_tokens=24, top_k=1)))
