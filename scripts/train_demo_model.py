#!/usr/bin/env python3
"""Train the small GPT-J that ships in ``examples/pystdlib-gptj`` (torch, transformers, tokenizers).

    /work/venv-torch/bin/python scripts/train_demo_model.py                 # the full run
    /work/venv-torch/bin/python scripts/train_demo_model.py --calibrate 10  # time 10 steps
    /work/venv-torch/bin/python scripts/train_demo_model.py --steps 5 --out /tmp/smoke  # smoke run

Everything is fixed by the seed and the interpreter that runs it:

- **Corpus**: the ``.py`` files of the running interpreter's standard library
  (``sysconfig.get_paths()["stdlib"]``; the shipped model was made with CPython 3.11.7, so the
  corpus is that version's, licensed under the PSF License). Left out, by directory name anywhere
  in the relative path: ``site-packages`` (not the standard library), ``test``, ``tests`` and
  ``idle_test`` (test suites are full of deliberately broken code and odd data), ``encodings``
  (mostly generated codec tables) and ``pydoc_data`` (one generated string of documentation).
  Files are read as strict UTF-8; a file that does not decode is skipped (its relative path is
  listed in training.json). Files are sorted by relative path (``/``-separated) and joined with
  ``<|endoftext|>`` after every file.
- **Held-out part**: whole files whose relative path's SHA-256 starts with a byte below 13
  (about 5%). They are never trained on, neither by the BPE trainer nor by the model; the first
  ~300 KB of them (whole files, joined the same way) are written to ``heldout.txt`` beside the
  model so that machines with another Python can still measure it.
- **Vocabulary**: byte-level BPE trained by Hugging Face ``tokenizers`` on the training files,
  4096 tokens with ``<|endoftext|>`` at id 0, GPT-2's pre-tokenizer regex, no prefix space. The
  files are written as ``GPT2TokenizerFast.save_pretrained`` writes them (vocab.json,
  merges.txt, tokenizer.json, tokenizer_config.json) plus the special_tokens_map.json older
  releases wrote.
- **Model**: ``GPTJForCausalLM`` (n_embd 256, 6 layers, 8 heads of 32 with rotary_dim 16,
  n_inner 1024, context 256, no dropout), trained in float32 on 2 threads for a fixed number of
  AdamW steps (linear warmup, cosine decay) on batches of random 256-token windows of the
  training stream; step ``s`` draws its windows from ``numpy.random.default_rng((seed, s))``,
  so a run resumed from a checkpoint takes the same batches. Saved as float16 with
  ``torch.save`` (zip format) as ``pytorch_model.bin``.

Progress is checkpointed to ``--work`` every ``--checkpoint-every`` steps (model, optimizer, step,
losses), and an interrupted run started again with the same arguments continues from there. The
output folder is written only at the end.
"""

import argparse
import hashlib
import json
import math
import os
import platform
import random
import shutil
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import numpy as np
import tokenizers
import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import GPT2TokenizerFast, GPTJConfig, GPTJForCausalLM

ENDOFTEXT = "<|endoftext|>"
EXCLUDED_DIRS = {"site-packages", "test", "tests", "idle_test", "encodings", "pydoc_data"}
HELDOUT_FIRST_BYTE_BELOW = 13  # of 256: about 5% of the files
HELDOUT_TXT_BYTES = 300_000
SEED = 20261205
VOCAB_SIZE = 4096
MODEL_SHAPE = dict(n_embd=256, n_layer=6, n_head=8, rotary_dim=16, n_positions=256)
CONTEXT = 256


def stdlib_files():
    """(relative path, text) of every standard-library source in the corpus, sorted by path,
    and the relative paths skipped because they are not UTF-8."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files, undecodable = [], []
    for path in root.rglob("*.py"):
        relative = path.relative_to(root).as_posix()
        if EXCLUDED_DIRS.intersection(relative.split("/")[:-1]):
            continue
        try:
            files.append((relative, path.read_bytes().decode("utf-8")))
        except UnicodeDecodeError:
            undecodable.append(relative)
    files.sort()
    return files, sorted(undecodable)


def is_heldout(relative):
    return hashlib.sha256(relative.encode("utf-8")).digest()[0] < HELDOUT_FIRST_BYTE_BELOW


def join_files(texts):
    return "".join(text + ENDOFTEXT for text in texts)


def heldout_excerpt(heldout_texts):
    """The held-out files from the first, whole, joined as in training, up to HELDOUT_TXT_BYTES."""
    kept, size = [], 0
    for text in heldout_texts:
        piece = len((text + ENDOFTEXT).encode("utf-8"))
        if size + piece > HELDOUT_TXT_BYTES:
            break
        kept.append(text)
        size += piece
    return join_files(kept)


def train_tokenizer(train_texts):
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=2,
        special_tokens=[ENDOFTEXT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(train_texts, trainer=trainer)
    return tokenizer


def save_tokenizer(tokenizer, folder):
    """Write the files GPT2TokenizerFast.save_pretrained writes (vocab.json and merges.txt too,
    which the BPE model saves itself)."""
    with tempfile.TemporaryDirectory() as scratch:
        tokenizer_file = os.path.join(scratch, "tokenizer.json")
        tokenizer.save(tokenizer_file)
        fast = GPT2TokenizerFast(
            tokenizer_file=tokenizer_file,
            unk_token=ENDOFTEXT,
            bos_token=ENDOFTEXT,
            eos_token=ENDOFTEXT,
            add_prefix_space=False,
        )
        fast.model_max_length = CONTEXT
        fast.save_pretrained(folder)
    tokenizer.model.save(str(folder))
    # transformers 5 no longer writes special_tokens_map.json; older releases (and tools that
    # read the folder without transformers) look there for the end-of-text token.
    special = {
        "content": ENDOFTEXT,
        "lstrip": False,
        "normalized": True,
        "rstrip": False,
        "single_word": False,
    }
    special_map = {name: special for name in ("bos_token", "eos_token", "unk_token")}
    (Path(folder) / "special_tokens_map.json").write_text(json.dumps(special_map, indent=2) + "\n")
    return fast


def encode_stream(tokenizer, texts):
    """Token ids of the texts joined with <|endoftext|> after each, as uint16."""
    eot = tokenizer.token_to_id(ENDOFTEXT)
    ids = []
    for encoding in tokenizer.encode_batch(texts):
        ids.extend(encoding.ids)
        ids.append(eot)
    return np.array(ids, dtype=np.uint16)


def make_model(eot_id):
    config = GPTJConfig(
        vocab_size=VOCAB_SIZE,
        n_inner=4 * MODEL_SHAPE["n_embd"],
        activation_function="gelu_new",
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        layer_norm_epsilon=1e-5,
        initializer_range=0.02,
        bos_token_id=eot_id,
        eos_token_id=eot_id,
        tie_word_embeddings=False,
        **MODEL_SHAPE,
    )
    return GPTJForCausalLM(config)


def learning_rate(step, steps, peak, warmup):
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def batch(stream, step, batch_size):
    rng = np.random.default_rng((SEED, step))
    starts = rng.integers(0, len(stream) - CONTEXT, size=batch_size)
    return torch.from_numpy(np.stack([stream[s : s + CONTEXT] for s in starts]).astype(np.int64))


@torch.no_grad()
def heldout_loss(model, stream, max_windows=None, batch_size=16):
    """Mean next-token loss over consecutive, non-overlapping 256-token windows of the stream."""
    model.eval()
    n_windows = (len(stream) - 1) // CONTEXT
    if max_windows is not None:
        n_windows = min(n_windows, max_windows)
    total, count = 0.0, 0
    for first in range(0, n_windows, batch_size):
        rows = range(first, min(n_windows, first + batch_size))
        ids = torch.from_numpy(
            np.stack([stream[r * CONTEXT : (r + 1) * CONTEXT] for r in rows]).astype(np.int64)
        )
        logits = model(ids).logits.float()
        losses = torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, VOCAB_SIZE), ids[:, 1:].reshape(-1), reduction="sum"
        )
        total += losses.item()
        count += ids[:, 1:].numel()
    model.train()
    return total / count


def save_checkpoint(path, model, optimizer, step, history):
    partial = path.with_suffix(".partial")
    torch.save(
        {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "step": step,
            "history": history,
        },
        partial,
    )
    os.replace(partial, path)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--out", default="examples/pystdlib-gptj", help="model folder to write at the end"
    )
    parser.add_argument(
        "--work",
        default=None,
        help="folder for the corpus cache and checkpoints (default OUT.work)",
    )
    parser.add_argument("--steps", type=int, default=1600)
    parser.add_argument("--batch-size", type=int, default=16, help="256-token windows per step")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument(
        "--warmup", type=int, default=None, help="warmup steps (default 5%% of --steps)"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--checkpoint-every", type=int, default=50)
    parser.add_argument(
        "--eval-every", type=int, default=250, help="held-out loss on 64 windows every N steps"
    )
    parser.add_argument(
        "--calibrate", type=int, default=0, metavar="N", help="time N steps and stop"
    )
    parser.add_argument(
        "--stop-at",
        type=int,
        default=None,
        metavar="N",
        help="write the model after step N of the --steps schedule (recorded; for a run that cannot finish)",
    )
    args = parser.parse_args()

    started = time.time()
    random.seed(SEED)
    np.random.seed(SEED)
    torch.manual_seed(SEED)
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    out = Path(args.out)
    work = Path(args.work) if args.work else out.with_name(out.name + ".work")
    work.mkdir(parents=True, exist_ok=True)
    warmup = args.warmup if args.warmup is not None else max(1, args.steps // 20)

    files, undecodable = stdlib_files()
    train_texts = [text for relative, text in files if not is_heldout(relative)]
    heldout_texts = [text for relative, text in files if is_heldout(relative)]
    heldout_paths = [relative for relative, _ in files if is_heldout(relative)]
    print(
        f"corpus: {len(files)} files ({len(train_texts)} train, {len(heldout_texts)} held out), "
        f"{sum(len(t.encode()) for _, t in files)} bytes; {len(undecodable)} not UTF-8",
        flush=True,
    )

    tokenizer = train_tokenizer(train_texts)
    eot_id = tokenizer.token_to_id(ENDOFTEXT)
    train_stream = encode_stream(tokenizer, train_texts)
    heldout_stream = encode_stream(tokenizer, heldout_texts)
    print(
        f"tokens: {len(train_stream)} train, {len(heldout_stream)} held out (vocab {tokenizer.get_vocab_size()})",
        flush=True,
    )

    model = make_model(eot_id)
    model.train()
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.1, eps=1e-8
    )
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params} parameters", flush=True)

    checkpoint_path = work / f"checkpoint-{args.steps}steps-bs{args.batch_size}.pt"
    history = {"train_loss": [], "eval": [], "seconds": 0.0}
    step = 0
    if checkpoint_path.exists() and not args.calibrate:
        state = torch.load(checkpoint_path, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step, history = state["step"], state["history"]
        print(f"resumed at step {step}", flush=True)

    last_steps = args.calibrate or min(args.steps, args.stop_at or args.steps)
    segment_start = time.time()
    seconds_before = history["seconds"]
    while step < last_steps:
        lr = learning_rate(step, args.steps, args.lr, warmup)
        for group in optimizer.param_groups:
            group["lr"] = lr
        ids = batch(train_stream, step, args.batch_size)
        loss = model(ids, labels=ids).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        step += 1
        history["train_loss"].append(round(loss.item(), 5))
        history["seconds"] = seconds_before + time.time() - segment_start
        if step % 10 == 0 or step == last_steps:
            recent = history["train_loss"][-10:]
            per_step = history["seconds"] / step
            print(
                f"step {step}/{args.steps} loss {sum(recent) / len(recent):.4f} lr {lr:.2e} "
                f"{per_step:.2f} s/step, eta {per_step * (args.steps - step) / 60:.1f} min",
                flush=True,
            )
        if args.calibrate:
            continue
        if step % args.eval_every == 0 and step < last_steps:
            value = heldout_loss(model, heldout_stream, max_windows=64)
            history["eval"].append({"step": step, "heldout_loss_64_windows": round(value, 5)})
            print(f"step {step}: held-out loss (64 windows) {value:.4f}", flush=True)
        if step % args.checkpoint_every == 0 or step == last_steps:
            save_checkpoint(checkpoint_path, model, optimizer, step, history)
    if args.calibrate:
        print(
            f"calibration: {history['seconds'] / args.calibrate:.2f} s/step over {args.calibrate} steps",
            flush=True,
        )
        return

    final_heldout = heldout_loss(model, heldout_stream)
    final_train = sum(history["train_loss"][-50:]) / len(history["train_loss"][-50:])
    print(
        f"final: train loss (last 50 steps) {final_train:.4f}, held-out loss {final_heldout:.4f} "
        f"(perplexity {math.exp(final_heldout):.2f})",
        flush=True,
    )

    # Ship float16; the held-out loss of the float16 weights read back in float32 is what
    # ggml-py's f32/f16 files reproduce.
    model.half()
    shipped = make_model(eot_id)
    shipped.load_state_dict({k: v.float() for k, v in model.state_dict().items()})
    shipped_heldout = heldout_loss(shipped, heldout_stream)
    print(f"float16 weights (run in float32): held-out loss {shipped_heldout:.4f}", flush=True)

    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    model.config.dtype = "float16"
    model.config.save_pretrained(staging)
    torch.save(model.state_dict(), staging / "pytorch_model.bin")
    save_tokenizer(tokenizer, staging)
    heldout_text = heldout_excerpt(heldout_texts)
    (staging / "heldout.txt").write_bytes(heldout_text.encode("utf-8"))
    record = {
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "seed": SEED,
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "corpus": {
            "files": len(files),
            "train_files": len(train_texts),
            "heldout_files": len(heldout_texts),
            "excluded_dirs": sorted(EXCLUDED_DIRS),
            "undecodable_skipped": undecodable,
            "heldout_rule": f"sha256(relative path)[0] < {HELDOUT_FIRST_BYTE_BELOW}",
            "train_tokens": int(len(train_stream)),
            "heldout_tokens": int(len(heldout_stream)),
            "heldout_txt_files": heldout_text.count(ENDOFTEXT),
            "heldout_txt_paths": heldout_paths[: heldout_text.count(ENDOFTEXT)],
            "vocab_json_sha256": hashlib.sha256((staging / "vocab.json").read_bytes()).hexdigest(),
        },
        "model": {
            **MODEL_SHAPE,
            "vocab_size": VOCAB_SIZE,
            "n_inner": 4 * MODEL_SHAPE["n_embd"],
            "parameters": n_params,
        },
        "training": {
            "steps": last_steps,
            "schedule_steps": args.steps,
            "batch_size": args.batch_size,
            "context": CONTEXT,
            "tokens_seen": args.steps * args.batch_size * CONTEXT,
            "optimizer": "AdamW betas (0.9, 0.95) weight_decay 0.1, grad clip 1.0",
            "peak_lr": args.lr,
            "warmup_steps": warmup,
            "schedule": "linear warmup, cosine decay to 10% of peak",
            "threads": args.threads,
            "wall_seconds": round(history["seconds"], 1),
        },
        "results": {
            "train_loss_last_50_steps": round(final_train, 5),
            "heldout_loss": round(final_heldout, 5),
            "heldout_perplexity": round(math.exp(final_heldout), 4),
            "heldout_loss_float16_weights": round(shipped_heldout, 5),
            "eval_during_training": history["eval"],
        },
        "train_loss_per_step": history["train_loss"],
    }
    (staging / "training.json").write_text(json.dumps(record, indent=1) + "\n")
    (staging / "README.md").write_text(readme(record))
    shutil.rmtree(out, ignore_errors=True)
    os.replace(staging, out)
    print(f"wrote {out} in {time.time() - started:.0f} s", flush=True)


def readme(record):
    model, training, results, corpus = (
        record["model"],
        record["training"],
        record["results"],
        record["corpus"],
    )
    return f"""# pystdlib-gptj: a small GPT-J trained on Python's standard library

A Hugging Face GPT-J folder (`GPTJForCausalLM`, float16 `pytorch_model.bin` in torch's zip format)
small enough to ship with ggml-py, trained so that its text makes sense: it writes Python.
Made by `scripts/train_demo_model.py` (seed {record["seed"]}) with CPython {record["python"]},
torch {record["torch"]}, transformers {record["transformers"]} and tokenizers {record["tokenizers"]}.

- **Shape**: vocab_size {model["vocab_size"]}, n_positions {model["n_positions"]}, n_embd {model["n_embd"]},
  n_layer {model["n_layer"]}, n_head {model["n_head"]}, rotary_dim {model["rotary_dim"]},
  n_inner {model["n_inner"]}: {model["parameters"]:,} parameters.
- **Vocabulary**: byte-level BPE trained with Hugging Face `tokenizers` on the training files
  (GPT-2's pre-tokenizer, no prefix space, `<|endoftext|>` at id 0 between files).
- **Training**: {training["steps"]} AdamW steps of {training["batch_size"]} windows of {training["context"]} tokens
  ({training["tokens_seen"]:,} tokens), {training["schedule"]}, peak learning rate {training["peak_lr"]},
  {training["wall_seconds"] / 60:.0f} minutes on {training["threads"]} CPU threads.
- **Loss**: {results["train_loss_last_50_steps"]:.3f} on training batches (mean of the last 50 steps),
  {results["heldout_loss"]:.3f} on the held-out files (perplexity {results["heldout_perplexity"]:.2f} per token;
  {results["heldout_loss_float16_weights"]:.3f} with the shipped float16 weights). Both are mean next-token
  losses over consecutive {training["context"]}-token windows with every position scored; `ggml-py perplexity`
  scores only the second half of each window (more context per token), so its perplexity is lower.

`training.json` records the configuration, the corpus counts and the loss of every step.

## Corpus and license

The training text is the `.py` source of the Python {record["python"]} standard library
(`sysconfig.get_paths()["stdlib"]`, without `{"`, `".join(corpus["excluded_dirs"])}` directories):
{corpus["train_files"]} files, {corpus["train_tokens"]:,} tokens. That source is Copyright (c) Python Software
Foundation and licensed under the PSF License Agreement (https://docs.python.org/3/license.html);
the model's weights are derived from it.

{corpus["heldout_files"]} files ({corpus["heldout_rule"]}, {corpus["heldout_tokens"]:,} tokens) were held out and
never trained on. `heldout.txt` holds the first {corpus["heldout_txt_files"]} of them, whole, each followed by
`<|endoftext|>` as in training (their paths are in `training.json`): the text ggml-py's
perplexity tests and quality table measure, the same on every machine whatever its Python.
"""


if __name__ == "__main__":
    main()
