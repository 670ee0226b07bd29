"""The sampler's transient memory at the released vocabulary (V = 262,144, hidden 2816, canvas 256): peak bytes of
the tensors one denoising step's sampling makes (logits, probabilities, uniforms, statistics), measured exactly by
`TensorPeak`, against the (L, V) float32 logits of one canvas row that a whole-canvas sampler holds before it
starts. Float32 weights on the CPU, batch 1.

    python bench/sampler_memory.py      # saves bench/results/sampler-memory.json; `dgemma bench --markdown-only`
"""
from __future__ import annotations

import argparse
import time

import torch

from dgemma.bench.hardware import TensorPeak
from dgemma.bench.report import publish_table
from dgemma.config import get_preset
from dgemma.model import DiffusionGemma
from dgemma.sampling import TILE_BYTES, sample_step

MB = 1e6


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="diffusiongemma-26b-a4b", help="preset whose vocabulary, hidden size and "
                   "canvas are used (only the embedding is built)")
    p.add_argument("--no-save", action="store_true", help="print the table only")
    args = p.parse_args(argv)
    cfg = get_preset(args.model).replace(num_layers=1, layer_types=["sliding_attention"], num_experts=1,
                                         top_k_experts=1, intermediate_size=8, moe_intermediate_size=8)
    model = DiffusionGemma(cfg)
    torch.nn.init.normal_(model.embed_tokens.weight, 0, 0.02)
    L, V, H = cfg.canvas_length, cfg.vocab_size, cfg.hidden_size
    hidden = torch.randn(1, L, H, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        sample_step(model, hidden, torch.ones(1), [g])  # warm-up
        t = time.perf_counter()
        with TensorPeak() as peak:
            stats = sample_step(model, hidden, torch.ones(1), [g])
        seconds = time.perf_counter() - t
    assert stats.sampled.shape == (1, L)
    whole = L * V * 4
    rows = [[f"{V:,}", f"{L}", f"{TILE_BYTES['cpu'] // (4 * V)} positions", f"{peak.peak / MB:.1f} MB",
             f"{whole / MB:.0f} MB", f"{seconds:.2f} s"]]
    text = (f"Peak bytes of the tensors alive at once while one sequence-step is sampled (TensorPeak: every storage "
            f"the ops make, until freed), tiles of {TILE_BYTES['cpu'] // 2**20} MiB of float32 logits. A sampler "
            f"over the whole canvas starts from {whole / MB:.0f} MB of float32 logits alone. Goal: at most 64 MB "
            f"per sequence-step. Time: float32 on this CPU, under the tracking mode.")
    publish_table(not args.no_save, "sampler-memory", f"Sampler transient at the {args.model} vocabulary, one sequence",
                  "python bench/sampler_memory.py",
                  ["vocabulary", "canvas", "tile", "peak transient", "whole-canvas logits", "time"], rows, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
