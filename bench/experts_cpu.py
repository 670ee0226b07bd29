"""The MoE branch on a CPU at small token counts (issue #22 item 7): the routed path (tokens sorted by expert, one
grouped matmul) and the dense path (every expert on every token, weighted by zero where not routed), timed eagerly
per shape and token count, with the fastest named. A denoising step's MoE call sees batch x canvas tokens.
Quantized experts: bench/quant_cpu.py.

    python bench/experts_cpu.py --threads 2     # saves bench/results/experts-cpu.json; `dgemma bench --markdown-only`
"""
from __future__ import annotations

import argparse
import time

import torch

from dgemma.bench.report import publish_table
from dgemma.config import get_preset
from dgemma.moe import Experts

SHAPES = {  # name: (preset, overrides)
    "tiny": ("tiny", {}),
    "mid (hidden 256, 16 experts)": ("tiny", {"hidden_size": 256, "num_experts": 16, "moe_intermediate_size": 128}),
    "small": ("small", {}),
}


def best_ms(fn, reps: int) -> float:
    fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1000 * min(times)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", default="32,64,256,1024", help="token counts per call, comma-separated")
    p.add_argument("--reps", type=int, default=20, help="timed calls per cell (the best is kept)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    p.add_argument("--no-save", action="store_true", help="print the table only")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    rows = []
    for label, (preset, over) in SHAPES.items():
        cfg = get_preset(preset).replace(**over)
        experts = Experts(cfg)
        with torch.no_grad():
            for w in experts.parameters():
                w.normal_(0, 0.02, generator=g)
        E, K = cfg.num_experts, cfg.top_k_experts
        for T in map(int, args.tokens.split(",")):
            x = torch.randn(T, cfg.hidden_size, generator=g)
            index = torch.stack([torch.randperm(E, generator=g)[:K] for _ in range(T)])
            weights = torch.softmax(torch.randn(T, K, generator=g), -1)
            with torch.no_grad():
                ms = {"routed": best_ms(lambda: experts(x, index, weights), args.reps),
                      "dense": best_ms(lambda: experts.dense(x, index, weights, experts.gate_up_proj,
                                                             experts.down_proj), args.reps)}
            fastest = min(ms, key=ms.get)
            rows.append([label, T, *(f"{ms[k]:.3f}" for k in ("routed", "dense")), fastest])
            print(" | ".join(map(str, rows[-1])), flush=True)
    if not args.no_save:
        publish_table(True, "experts-cpu", "The MoE branch on a CPU: routed and dense",
                      "python bench/experts_cpu.py" + (f" --threads {args.threads}" if args.threads else ""),
                      ["shape", "tokens", "routed ms", "dense ms", "fastest"], rows,
                      "One call of the routed experts (top-k of E), float32 eager, best of the timed calls. Routed: "
                      "assignments sorted by expert, one grouped matmul; dense: every expert on every token.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
