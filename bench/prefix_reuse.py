"""Prefix reuse in the server's engine: time to the first streamed tokens of the 5th turn of a conversation of
about 2K tokens, with the kept caches of earlier turns (`--prefix-cache`, the default) and without (0), on the
bundled code model. Each turn's prompt is the last one, its reply and a new user message of about 400 tokens.

    python bench/prefix_reuse.py           # saves bench/results/prefix-reuse.json; `dgemma bench --markdown-only`
"""
from __future__ import annotations

import argparse
import sys
import threading
import time

import torch

from dgemma.bench.report import publish_table
from dgemma.engine import GenerationConfig
from dgemma.model import DiffusionGemma
from dgemma.serving import default_model_dir
from dgemma.serving.batcher import BatchEngine, Request, SamplingParams


def conversation(model, prefix_cache: int, turns: int, message: int, steps: int) -> list[tuple[int, float]]:
    """(prompt tokens, seconds from submission to the first streamed tokens) of each turn."""
    V = model.config.vocab_size
    eng = BatchEngine(model, max_batch=1, lock_after=2, context_length=model.config.max_position_embeddings - 64,
                      prefix_cache=prefix_cache)
    eng.start()
    g = torch.Generator().manual_seed(0)
    prompt, out = [2], []
    for turn in range(turns):
        prompt += torch.randint(3, V, (message,), generator=g).tolist()
        first, done, reply = [], threading.Event(), []

        def emit(kind, payload):
            if kind == "tokens":
                if not reply:
                    first.append(time.perf_counter())
                reply.extend(payload)
            elif kind in ("done", "error"):
                done.set()
        gen = GenerationConfig(max_new_tokens=64, max_denoising_steps=steps, eos_token_id=(1,))
        t0 = time.perf_counter()
        eng.submit(Request(list(prompt), SamplingParams(gen, seed=turn), emit))
        assert done.wait(600)
        out.append((len(prompt), first[0] - t0))
        prompt += reply
    eng.shutdown()
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(default_model_dir()), help="checkpoint directory (default: bundled)")
    p.add_argument("--turns", type=int, default=5)
    p.add_argument("--message", type=int, default=400, help="tokens of each new user message (default 400)")
    p.add_argument("--steps", type=int, default=8, help="denoising steps per canvas (default 8)")
    p.add_argument("--repeats", type=int, default=3, help="conversations timed per setting; the best is kept")
    p.add_argument("--no-save", action="store_true", help="print the table only")
    args = p.parse_args(argv)
    torch.set_grad_enabled(False)
    model = DiffusionGemma.from_pretrained(args.model).eval()
    conversation(model, 4, 2, args.message, args.steps)  # warm-up
    rows = []
    for kept in (4, 0):
        runs = [conversation(model, kept, args.turns, args.message, args.steps) for _ in range(args.repeats)]
        best = min(run[-1][1] for run in runs)
        rows.append([f"--prefix-cache {kept}" + (" (default)" if kept else " (off)"), f"{runs[0][-1][0]:,}",
                     f"{best * 1000:.0f} ms"])
    speedup = float(rows[1][2].split()[0]) / float(rows[0][2].split()[0])
    text = (f"One conversation at a time, float32, the server's engine in process (`BatchEngine`, streaming locked "
            f"tokens). Turn {args.turns}'s prompt is the previous prompt, its reply and {args.message} new tokens; "
            f"with a kept cache only those new tokens (and the reply's last canvas) are encoded. Best of "
            f"{args.repeats}. Reuse: {speedup:.1f}x faster to the first tokens; the tokens are the same either way "
            f"(tests/test_server_batcher.py).")
    publish_table(not args.no_save, "prefix-reuse", f"Prefix reuse: time to first tokens of turn {args.turns}, CPU",
                  " ".join(["python bench/prefix_reuse.py", *(sys.argv[1:] if argv is None else argv)]),
                  ["setting", f"turn {args.turns} prompt tokens", "time to first tokens"], rows, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
