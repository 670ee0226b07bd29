"""Image encoding at the released tower's shape (issue #27 item 5): 27 layers of width 1152 with random weights,
the processor and the tower plus embedder timed apart, for soft-token budgets of 280 and 1120 per image.

    python bench/vision_encode.py --threads 2   # saves bench/results/vision-encode.json for BENCHMARKS.md
"""
from __future__ import annotations

import argparse

import numpy as np
import torch
from PIL import Image

from dgemma.bench.hardware import timed
from dgemma.bench.report import publish_table
from dgemma.checkpoint import parse_dtype
from dgemma.config import RELEASED_VISION_CONFIG, get_preset
from dgemma.vision import ImageProcessor, Vision, VisionConfig


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--budgets", default="280,1120", help="soft tokens per image, comma-separated")
    p.add_argument("--dtypes", default="bfloat16,float32", help="weight dtypes, comma-separated")
    p.add_argument("--reps", type=int, default=1,
                   help="timed encodes per cell, their median kept; above 1, after a warm-up (default 1: a "
                   "1120-token image takes minutes on 2 cores)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    p.add_argument("--no-save", action="store_true", help="print the table only")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = VisionConfig.from_hf_dict(RELEASED_VISION_CONFIG)
    text_hidden = get_preset("diffusiongemma-26b-a4b").hidden_size
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (1080, 1440, 3), dtype=np.uint8))  # 4:3 photo
    rows = []
    for dtype in map(parse_dtype, args.dtypes.split(",")):
        torch.manual_seed(0)
        vision = Vision(cfg, text_hidden).to(dtype)
        with torch.no_grad():
            for w in vision.parameters():
                w.normal_(0, 0.02) if w.dim() > 1 else w.fill_(1.0)
        for budget in map(int, args.budgets.split(",")):
            proc = ImageProcessor.for_config(cfg, budget)
            inputs = proc(image)
            warmup = 1 if args.reps > 1 else 0
            prep, _ = timed(lambda: proc(image), "cpu", args.reps, warmup)
            with torch.no_grad():
                enc, soft = timed(lambda: vision(inputs["pixel_values"], inputs["image_position_ids"]), "cpu",
                                  args.reps, warmup)
            n = inputs["num_soft_tokens_per_image"][0]
            assert soft.shape == (n, text_hidden)
            rows.append([str(dtype).removeprefix("torch."), budget, n, inputs["pixel_values"].shape[1],
                         f"{prep:.3f}", f"{enc:.2f}", f"{n / enc:.0f}"])
            print(" | ".join(map(str, rows[-1])), flush=True)
    publish_table(not args.no_save, "vision-encode", "Image encoding at the released tower's shape",
                  "python bench/vision_encode.py" + (f" --threads {args.threads}" if args.threads else "")
                  + (f" --reps {args.reps}" if args.reps != 1 else ""),
                  ["weights", "budget", "soft tokens", "patches", "processor s", "tower + embedder s",
                   "soft tokens / s"], rows,
                  f"One 1440x1080 image, random weights, {cfg.num_layers} layers of {cfg.hidden_size} "
                  f"({cfg.num_parameters(text_hidden) / 1e9:.2f}B parameters with the embedder), eager, "
                  + (f"median of {args.reps} after a warm-up" if args.reps > 1 else "one timed encode")
                  + ". The tower attends over every patch (padding included: a budget's patch count is fixed), so "
                  "its time grows with the budget, not with the image.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
