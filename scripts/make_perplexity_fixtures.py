#!/usr/bin/env python3
"""Golden data for ``ggml-py perplexity`` and the shipped trained model, from transformers.

    /work/venv-torch/bin/python scripts/make_perplexity_fixtures.py

For each model folder below, in float32 (a float16 checkpoint read into float32, which is what
ggml-py's f32 and f16 files of it compute with):

- **perplexity**: the text is tokenized by ``GPT2TokenizerFast``, cut into chunks of ``n_ctx``
  tokens as llama.cpp's llama-perplexity does (the remainder dropped), each chunk run through
  ``GPTJForCausalLM`` from scratch, and the tokens of its second half scored: logits at positions
  ``n_ctx/2 .. n_ctx-2``, log-softmax in float64. Stored: the token ids, the sum of the negative
  log-likelihoods and of their squares, the count, and PPL = exp(mean) with llama.cpp's error.
- **logits** (trained model only): every position's logits for a few held-out prompts, and the
  greedy continuation (``generate(do_sample=False)``) of each.

Outputs: ``tests/fixtures/perplexity/tiny-gptj.json`` (tiny-gptj, random weights, on a short
fixed text) and, when ``examples/pystdlib-gptj`` exists, ``pystdlib-gptj.json`` +
``pystdlib-gptj-logits.npz`` (the first slice of ``heldout.txt`` and the prompts).
"""

import json
import math
from pathlib import Path

import numpy as np
import torch
from transformers import GPT2TokenizerFast, GPTJForCausalLM

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "tests" / "fixtures" / "perplexity"

TINY_TEXT = (
    "def fibonacci(n):\n"
    '    """Return the n-th Fibonacci number."""\n'
    "    a, b = 0, 1\n"
    "    for _ in range(n):\n"
    "        a, b = b, a + b\n"
    "    return a\n\n\n"
    "class Stack:\n"
    "    def __init__(self):\n"
    "        self.items = []\n\n"
    "    def push(self, item):\n"
    "        self.items.append(item)\n\n"
    "    def pop(self):\n"
    "        return self.items.pop()\n\n"
    "    def __len__(self):\n"
    "        return len(self.items)\n\n\n"
    "if __name__ == '__main__':\n"
    "    print([fibonacci(i) for i in range(10)])\n"
)
TINY_N_CTX = 32

# The trained model: perplexity on the first HELDOUT_CHUNKS chunks of heldout.txt (the tests'
# slice) and on the whole file (the quality table's number), at the model's context.
HELDOUT_CHUNKS = 8
PROMPTS = ["def fibonacci(n):", "import os\nimport sys\n\n\nclass ", "    for key, value in self."]
N_GREEDY = 32


def load(folder):
    model = GPTJForCausalLM.from_pretrained(folder, dtype=torch.float32)
    model.eval()
    return model, GPT2TokenizerFast.from_pretrained(folder)


@torch.no_grad()
def chunked_nll(model, ids, n_ctx):
    """Negative log-likelihoods of the scored tokens, chunk after chunk, float64."""
    first = n_ctx // 2
    scores = []
    for chunk in range(len(ids) // n_ctx):
        tokens = torch.tensor([ids[chunk * n_ctx : (chunk + 1) * n_ctx]])
        logits = model(tokens).logits[0].double()  # [n_ctx, V]
        log_p = torch.log_softmax(logits[first:-1], dim=-1)
        targets = tokens[0, first + 1 :]
        scores.append(-log_p[torch.arange(len(targets)), targets])
    return torch.cat(scores).numpy()


def perplexity_record(nll, n_ctx, ids):
    count = len(nll)
    mean = float(nll.mean())
    variance = float((nll**2).mean()) - mean * mean
    ppl = math.exp(mean)
    return {
        "n_ctx": n_ctx,
        "ids": [int(i) for i in ids],
        "count": count,
        "nll_sum": float(nll.sum()),
        "nll2_sum": float((nll**2).sum()),
        "ppl": ppl,
        "ppl_error": ppl * math.sqrt(variance / (count - 1)),
    }


def tiny():
    model, tokenizer = load(REPO / "examples" / "tiny-gptj")
    ids = tokenizer(TINY_TEXT)["input_ids"]
    record = {
        "text": TINY_TEXT,
        **perplexity_record(chunked_nll(model, ids, TINY_N_CTX), TINY_N_CTX, ids),
    }
    (OUT / "tiny-gptj.json").write_text(json.dumps(record, indent=1) + "\n")
    print(f"tiny-gptj: {len(ids)} tokens, PPL {record['ppl']:.4f} +/- {record['ppl_error']:.4f}")


@torch.no_grad()
def trained(folder):
    model, tokenizer = load(folder)
    n_ctx = model.config.n_positions
    text = (folder / "heldout.txt").read_text(encoding="utf-8")
    ids = tokenizer(text)["input_ids"]
    sliced = ids[: HELDOUT_CHUNKS * n_ctx]
    whole_nll = chunked_nll(model, ids, n_ctx)
    whole = perplexity_record(whole_nll, n_ctx, [])
    del whole["ids"]
    record = {
        "heldout_slice": perplexity_record(chunked_nll(model, sliced, n_ctx), n_ctx, sliced),
        "heldout_whole": {**whole, "n_tokens": len(ids)},
        "prompts": [],
    }
    arrays = {}
    for index, prompt in enumerate(PROMPTS):
        prompt_ids = tokenizer(prompt)["input_ids"]
        arrays[f"p{index}"] = model(torch.tensor([prompt_ids])).logits[0].numpy()  # [T, V]
        greedy = model.generate(
            torch.tensor([prompt_ids]),
            max_new_tokens=N_GREEDY,
            do_sample=False,
            eos_token_id=None,
            pad_token_id=tokenizer.eos_token_id,
        )[0, len(prompt_ids) :]
        record["prompts"].append(
            {
                "text": prompt,
                "ids": prompt_ids,
                "greedy_ids": greedy.tolist(),
                "greedy_text": tokenizer.decode(greedy),
            }
        )
    (OUT / "pystdlib-gptj.json").write_text(json.dumps(record, indent=1) + "\n")
    np.savez_compressed(OUT / "pystdlib-gptj-logits.npz", **arrays)
    print(
        f"pystdlib-gptj: held-out slice PPL {record['heldout_slice']['ppl']:.4f}, "
        f"whole ({len(ids)} tokens) {whole['ppl']:.4f} +/- {whole['ppl_error']:.4f}"
    )
    for prompt in record["prompts"]:
        print(repr(prompt["text"] + prompt["greedy_text"]))


def main():
    torch.set_num_threads(2)
    OUT.mkdir(parents=True, exist_ok=True)
    tiny()
    folder = REPO / "examples" / "pystdlib-gptj"
    if folder.is_dir():
        trained(folder)


if __name__ == "__main__":
    main()
