"""A long prompt on the CPU: the `small` preset (float32) prefills a 128K-token prompt through the one encoder pass
(chunks of at most window + canvas on the sliding ring, logits computed nowhere) and then generates one canvas.
Reports the time, the KV cache's size and the peak memory the run added above the loaded model (resident set,
sampled every 2 ms; goal: at most the KV cache plus 2 GB).

    python bench/long_prompt.py                    # saves bench/results/long-prompt.json; `dgemma bench --markdown-only`
    python bench/long_prompt.py --length 16384     # a quicker look
"""
from __future__ import annotations

import argparse
import sys
import time

import torch

from dgemma.bench.hardware import PeakMemory
from dgemma.bench.report import publish_table
from dgemma.cache import KVCache
from dgemma.engine import Engine, GenerationConfig
from dgemma.model import DiffusionGemma

GB = 1e9


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="small", help="preset or checkpoint directory (default: small)")
    p.add_argument("--length", type=int, default=131_072, help="prompt tokens (default 131072)")
    p.add_argument("--steps", type=int, default=4, help="denoising steps of the one canvas generated (default 4)")
    p.add_argument("--no-save", action="store_true", help="print the table only")
    args = p.parse_args(argv)
    model = DiffusionGemma.from_pretrained(args.model).eval()
    cfg = model.config
    if args.length < 1:
        p.error("--length must be >= 1")
    n = args.length + cfg.canvas_length
    if n > cfg.max_position_embeddings:
        p.error(f"--length {args.length} plus a canvas of {cfg.canvas_length} exceeds the model's maximum context "
                f"of {cfg.max_position_embeddings}")
    kv = KVCache.nbytes(cfg, 1, n, model.dtype)
    prompt = torch.randint(3, cfg.vocab_size, (1, args.length), generator=torch.Generator().manual_seed(0))
    engine = Engine(model)
    gen = GenerationConfig(max_new_tokens=cfg.canvas_length, max_denoising_steps=args.steps)
    with torch.no_grad(), PeakMemory("cpu") as mem:
        cache = model.new_cache(1, n)
        t0 = time.perf_counter()
        engine.prefill(prompt[:, :-1], cache)
        prefill = time.perf_counter() - t0
        t1 = time.perf_counter()  # the last prompt token goes in with the generation, as a chat turn's would
        out = engine.generate(prompt[:, -1:], gen, seed=0, cache=cache)
        canvas = time.perf_counter() - t1
    assert out.sequences.shape[1] == 1 + cfg.canvas_length
    rows = [[args.model, f"{args.length:,}", f"{prefill:.1f} s", f"{args.length / prefill:,.0f}", f"{canvas:.2f} s",
             f"{kv / GB:.2f} GB", f"{mem.extra / GB:.2f} GB", f"{(mem.extra - kv) / GB:.2f} GB"]]
    text = (f"One sequence, float32: the prompt prefilled in chunks of at most {cache.ring - cfg.sliding_window + 1} "
            f"tokens (the sliding layers' ring holds the window and one canvas), then one canvas of "
            f"{cfg.canvas_length} tokens in {args.steps} steps. Peak: the resident set's rise during the run, cache "
            f"included. Goal: at most the KV cache plus 2 GB.")
    publish_table(not args.no_save, "long-prompt", f"A {args.length:,}-token prompt on `{args.model}`, CPU",
                  " ".join(["python bench/long_prompt.py", *(sys.argv[1:] if argv is None else argv)]),
                  ["model", "prompt", "prefill", "prefill tokens/s", "one canvas", "KV cache", "peak added",
                   "peak beyond the cache"], rows, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
