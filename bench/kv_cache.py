"""KV cache of the released shape (diffusiongemma-26b-a4b, bf16) by context length: what `new_cache` allocates
(global layers keep every position, sliding layers a ring of window + canvas slots) against keeping every position
on every layer. Computed from the config by `KVCache.nbytes`, which a test checks against a real allocation.

    python bench/kv_cache.py            # saves bench/results/kv-cache-26b.json; `dgemma bench --markdown-only`
"""
from __future__ import annotations

import argparse

import torch

from dgemma.bench.report import publish_table
from dgemma.cache import KVCache
from dgemma.config import get_preset

GIB = 2**30


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="diffusiongemma-26b-a4b", help="preset whose shape is used")
    p.add_argument("--no-save", action="store_true", help="print the table only")
    args = p.parse_args(argv)
    cfg = get_preset(args.model)
    every = sum(2 * cfg.layer_kv_heads(i) * cfg.layer_head_dim(i) for i in range(cfg.num_layers)) * 2 + 1
    per_token = (KVCache.nbytes(cfg, 1, 200_000, torch.bfloat16) - KVCache.nbytes(cfg, 1, 100_000, torch.bfloat16)) \
        / 100_000
    fixed = KVCache.nbytes(cfg, 1, 100_000, torch.bfloat16) - 100_000 * per_token
    rows = [[f"{n:,}", f"{KVCache.nbytes(cfg, 1, n, torch.bfloat16) / GIB:.2f} GiB", f"{every * n / GIB:.2f} GiB"]
            for n in (4096, 32_768, 131_072, 262_144)]
    text = (f"Per sequence: {per_token / 1024:.1f} KiB per token (the global layers' keys and values, one byte of "
            f"padding mask) plus {fixed / GIB:.3f} GiB of sliding-layer rings; keeping every position on every layer "
            f"costs {every / 1024:.1f} KiB per token. Goal: at most 21 KiB per token plus 0.25 GiB per sequence, "
            f"and at most 6 GiB at 256K.")
    publish_table(not args.no_save, "kv-cache-26b", f"KV cache of the {args.model} shape, bf16, batch 1",
                  "python bench/kv_cache.py", ["context (tokens)", "dgemma cache", "every position kept"], rows, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
