"""Stream text from Python: pieces arrive as tokens are sampled, like ``ggml-py run``.

    python examples/stream_from_python.py MODEL_FILE [PROMPT]

MODEL_FILE is a ggml or GGUF GPT-J file (``ggml-py convert`` makes one). Shows the sampling
options (ggml's defaults unless given), a stop string, and the lower-level ``eval``.
"""

import sys

import numpy as np

import ggml_py

path = sys.argv[1]
prompt = sys.argv[2] if len(sys.argv) > 2 else "Once upon a time"

model = ggml_py.load(
    path, backend="blocked-f16", n_threads=2
)  # default: auto (numba, numpy-blas or blocked-f16)

print(prompt, end="", flush=True)
for piece in model.generate(
    prompt,
    max_tokens=60,
    temperature=0.8,
    top_k=40,
    top_p=0.95,
    repeat_penalty=1.1,
    seed=1,
    stop=["\n\n"],
):
    print(piece, end="", flush=True)
print()

# eval: logits for every position of a token sequence, continuing from cached positions
ids = model.tokenizer.encode(prompt)
model.reset()
logits = model.eval(ids, n_past=0)  # [len(ids), n_vocab]
next_id = int(np.argmax(logits[-1]))
logits = model.eval([next_id], n_past=len(ids))  # one more position
print("greedy next tokens:", repr(model.tokenizer.decode([next_id, int(np.argmax(logits[-1]))])))
