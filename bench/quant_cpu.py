"""Quantized kernels on a CPU (issue #23 item 2): one linear layer and one layer's routed experts at the released
model's shapes, float32 and bf16 against int8, int4 and fp8 weights, at the token counts of an AR token, a short
prefill piece and a denoising step. Also times the candidates dgemma does not use, torch's weight-only
`_weight_int8pack_mm` and `_weight_int4pack_mm_for_cpu`, so the choices of int8 matmuls and of
dequantize-then-matmul for int4 are measured ones.

    python bench/quant_cpu.py --threads 2     # saves bench/results/quant-cpu.json; `dgemma bench --markdown-only`
"""
from __future__ import annotations

import argparse
import torch

from dgemma.bench.hardware import timed
from dgemma.bench.report import publish_table
from dgemma.config import get_preset
from dgemma.moe import Experts
from dgemma.quantize import QuantExperts, QuantLinear, quantize_tensor

FORMATS = ("int8", "int4", "fp8")


def median_ms(fn, reps: int) -> float:
    return 1000 * timed(fn, "cpu", reps=reps)[0]


def int4pack(linear: torch.nn.Linear, group: int):
    """torch's CPU int4 kernel on the same codes: (x -> y) with its packed layout and (q - 8) * s + z form."""
    s = quantize_tensor(linear.weight.detach().float(), "int4", group)
    codes = torch.stack([s[""] & 15, s[""] >> 4], -1).flatten(-2).to(torch.int32)
    packed = torch._convert_weight_to_int4pack_for_cpu(codes, 1)
    scale, zero = s["_scale"].float(), s["_zero"].float()
    sz = torch.stack([scale, (8 - zero) * scale], -1).transpose(0, 1).contiguous()  # (K/G, N, 2)
    return lambda x: torch._weight_int4pack_mm_for_cpu(x, packed, group, sz.to(x.dtype))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", default="1,16,64,256", help="token counts per call, comma-separated")
    p.add_argument("--reps", type=int, default=5, help="timed calls per cell (the median is kept)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    p.add_argument("--no-save", action="store_true", help="print the table only")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    cfg = get_preset("diffusiongemma-26b-a4b")
    g = torch.Generator().manual_seed(0)
    H, group = cfg.hidden_size, 64
    header = ["module", "dtype", "tokens", "float ms", *(f"{f} ms" for f in FORMATS), "int8pack ms",
              "int4pack ms"]
    rows = []
    for dtype in (torch.float32, torch.bfloat16):
        lin = torch.nn.Linear(H, cfg.num_heads * cfg.head_dim, bias=False)
        lin.weight.normal_(0, 0.02, generator=g)
        lin = lin.to(dtype)
        quant = {f: QuantLinear.of(lin, f, group) for f in FORMATS}
        packed = int4pack(lin, group)
        w8 = quant["int8"]
        int8pack = lambda x: torch._weight_int8pack_mm(x, w8.weight, w8.weight_scale.to(x.dtype))  # noqa: E731
        for T in map(int, args.tokens.split(",")):
            x = torch.randn(T, H, generator=g).to(dtype)
            cells = [median_ms(lambda c=c: c(x), args.reps) for c in (lin, *quant.values(), int8pack, packed)]
            rows.append([f"q_proj {H}->{lin.out_features}", str(dtype).removeprefix("torch."), T,
                         *(f"{c:.2f}" for c in cells)])
            print(" | ".join(map(str, rows[-1])), flush=True)
    experts = Experts(cfg)  # bf16 only: a layer of the released model's experts in float32 is 3 GB
    for w in experts.parameters():
        w.normal_(0, 0.02, generator=g)
    experts = experts.to(torch.bfloat16)
    quant = {f: QuantExperts(experts, f, group) for f in FORMATS}
    E, K = cfg.num_experts, cfg.top_k_experts
    for T in map(int, args.tokens.split(",")):
        x = torch.randn(T, H, generator=g).to(torch.bfloat16)
        index = torch.stack([torch.randperm(E, generator=g)[:K] for _ in range(T)])
        weights = torch.softmax(torch.randn(T, K, generator=g), -1).to(torch.bfloat16)
        cells = [median_ms(lambda m=m: m(x, index, weights), args.reps) for m in (experts, *quant.values())]
        rows.append([f"experts {E} x {2 * cfg.moe_intermediate_size}x{H}, top-{K}", "bfloat16", T,
                     *(f"{c:.1f}" for c in cells), "-", "-"])
        print(" | ".join(map(str, rows[-1])), flush=True)
    if not args.no_save:
        publish_table(True, "quant-cpu", "Quantized kernels on a CPU at the released shapes",
                      "python bench/quant_cpu.py" + (f" --threads {args.threads}" if args.threads else ""),
                      header, rows,
                      "Median of the timed calls, eager. float: the weights in the call's dtype; int8: "
                      "linears quantize the activations per row and run torch._int_mm; fp8: torch._scaled_mm "
                      "with per-row fp8 activations "
                      "(float32 and bf16 alike); int4 and every expert format: dequantized for the call, then the "
                      "float matmul (experts: one grouped matmul, only the used experts when there are fewer "
                      "assignments than experts), written into a reused buffer; int8pack and int4pack: the "
                      "weight-only torch._weight_int8pack_mm and torch._weight_int4pack_mm_for_cpu on the same "
                      f"codes (groups of {group}), the candidates not taken.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
