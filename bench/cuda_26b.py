#!/usr/bin/env python
"""CUDA benchmark that needs no weights: the DiffusionGemma 26B-A4B shape with random bf16 weights.

For batch 1 and 4, a 4k-token prompt and one 256-token canvas it measures dgemma's denoising step (decoder
forward + sampling, median of several) against its roofline floor (weights + KV bytes over the measured
bandwidth, FLOPs over the measured bf16 matmul rate), the reference's static-cache `torch.compile`d `generate`
on the same weights (transformers 5.23, when installed; per-step time from the difference of two step counts),
and AR token latency of the same weights against its own floor. Writes bench/results/cuda-26b.json and
regenerates BENCHMARKS.md. Designed to finish within 10 minutes on one 80 GB GPU (the weights are one 50 GB
copy shared by both implementations).

    python bench/cuda_26b.py                       # the real thing (needs a GPU)
    python bench/cuda_26b.py --quantize fp8        # fp8 or mixed weights, drawn quantized (no reference)
    python bench/cuda_26b.py --model small --device cpu --dtype fp32 --prompt 256 --batches 1 --no-save
                                                   # the same code path at a scaled-down shape, for testing
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
import traceback
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dgemma.bench import hardware, measure, report  # noqa: E402
from dgemma.checkpoint import parse_dtype  # noqa: E402


def build(model_id: str, dtype, device, with_reference: bool, log, quantize: str | None = None):
    """The reference model first (random init on the device), dgemma sharing its tensors; dgemma alone without
    transformers. Large presets are built on the meta device and materialised on the device in `dtype`
    (`quantize`: each weight quantized as it is drawn, no reference)."""
    if quantize:
        from dgemma.model import DiffusionGemma
        return DiffusionGemma.from_pretrained(model_id, dtype=dtype, device=device, quantize=quantize).eval(), None
    if with_reference:
        try:
            return measure.build_models(model_id, dtype, device, seed=0, with_reference=True)
        except Exception as e:  # out of memory or an API difference: go on without the reference
            log(f"reference model could not be built ({type(e).__name__}: {e}); continuing without it")
            torch.cuda.empty_cache() if torch.cuda.is_available() else None
    from dgemma.checkpoint import build_model
    from dgemma.model import DiffusionGemma
    from dgemma.commands.info import load_config
    model = build_model(DiffusionGemma, load_config(model_id)[0], dtype).to_empty(device=device)
    model.init_weights(torch.Generator(device=device).manual_seed(0))
    return model.eval(), None


def reference_step(ref, prompt, steps: int, reps: int, log) -> dict:
    """Static-cache compiled reference generate with `steps` and 2 steps per canvas on one canvas: per-step
    time = difference / (steps - 2) (prefill, compilation and the canvas commit cancel)."""
    def run(n):
        torch.manual_seed(0)
        with torch.no_grad():
            out = ref.generate(prompt, max_new_tokens=ref.config.canvas_length, max_denoising_steps=n,
                               eos_token_id=list(measure.STOP_IDS), pad_token_id=0, cache_implementation="static")
        return out
    t0 = time.perf_counter()
    run(2)  # compile and warm up
    hardware.sync(prompt.device)
    log(f"  reference compiled and warmed up in {time.perf_counter() - t0:.1f} s")
    short, _ = hardware.timed(lambda: run(2), prompt.device, reps=reps, warmup=0)
    long, out = hardware.timed(lambda: run(steps), prompt.device, reps=reps, warmup=0)
    return {"reference_step_s": (long - short) / (steps - 2), "reference_total_s": long,
            "reference_sequences": out.sequences.cpu()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="diffusiongemma-26b-a4b", help="preset whose shape is built with random weights")
    p.add_argument("--device", default="cuda", help="torch device (cpu only to exercise the script)")
    p.add_argument("--dtype", default="bf16", help="weight dtype: bf16, fp16, fp32 or fp64")
    p.add_argument("--batches", default="1,4", help="comma-separated batch sizes")
    p.add_argument("--prompt", type=int, default=4096, help="prompt length in tokens")
    p.add_argument("--steps", type=int, default=16, help="denoising steps of the timed generations")
    p.add_argument("--ar-tokens", type=int, default=32, help="tokens decoded autoregressively for the AR latency")
    p.add_argument("--reps", type=int, default=3, help="repetitions of the step measurement (median kept)")
    p.add_argument("--eager", action="store_true",
                   help="run dgemma's decoder eagerly (default: compiled, with CUDA graphs on GPU)")
    p.add_argument("--no-reference", action="store_true", help="skip transformers' generate even when installed")
    p.add_argument("--quantize", choices=("int8", "int4", "fp8", "mixed"), default=None,
                   help="quantized weights (dgemma.quantize; fp8 needs compute capability 8.9+); skips the reference")
    p.add_argument("--deadline", type=float, default=540, help="seconds after which remaining parts are skipped")
    p.add_argument("--reference-reserve", type=float, default=150,
                   help="start a reference measurement only with at least this many seconds before the deadline")
    p.add_argument("--no-save", action="store_true", help="print the result only")
    p.add_argument("--results-dir", default=str(ROOT / "bench/results"), help="where the JSON result is saved")
    args = p.parse_args(argv)
    t_start = time.perf_counter()

    def log(*a):
        print(f"[{time.perf_counter() - t_start:6.1f}s]", *a, file=sys.stderr, flush=True)

    def late():
        return time.perf_counter() - t_start > args.deadline

    device, dtype = torch.device(args.device), parse_dtype(args.dtype)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("cuda_26b.py: no CUDA device available; nothing measured (BENCHMARKS.md keeps its 'not yet run' "
              "section). Use --device cpu with a small --model to exercise the script.", file=sys.stderr)
        return 2
    torch.backends.cuda.matmul.allow_tf32 = True
    with_ref = not args.no_reference and not args.quantize and measure.reference_available()
    log(f"machine: {hardware.machine_description(device)}")
    bw = hardware.measure_bandwidth(device)
    from dgemma.commands.info import load_config
    cfg = load_config(args.model)[0]
    H, I = cfg.hidden_size, cfg.intermediate_size
    shapes = [(256 * b, H, I) for b in (1, 4)] + [(256, H, 2 * cfg.moe_intermediate_size)]
    mm = hardware.measure_matmul(device, dtype, max_seconds=3.0, shapes=shapes)
    log(f"bandwidth {bw / 1e9:.0f} GB/s, {mm['dtype']} matmul {mm['flops_per_s'] / 1e12:.1f} TFLOP/s "
        f"(best at {mm['best_shape']})")

    model, ref = build(args.model, dtype, device, with_ref, log, args.quantize)
    log(f"built {args.model} ({cfg.num_parameters() / 1e9:.2f}e9 parameters, {dtype}"
        + (f", {args.quantize}" if args.quantize else "") + ")"
        + (" and the reference on the same tensors" if ref is not None else ""))
    kv_bpp = torch.finfo(dtype).bits / 8
    from dgemma.quantize import weight_stats
    weights = weight_stats(model)
    bpp = weights["weight_bytes"] / cfg.num_parameters() if args.quantize else kv_bpp  # of the weights
    L = cfg.canvas_length
    rows, errors = [], []

    def attempt(label: str, part) -> bool:
        """Run one measurement; a failure (out of memory, an API difference) is recorded and the run goes on."""
        try:
            part()
            return True
        except Exception as e:
            errors.append(f"{label}: {type(e).__name__}: {e}")
            log(traceback.format_exc())
            return False

    def dgemma_part(row, prompt):
        B = row["batch"]
        log(f"batch {B}: prefill and dgemma step")
        row["prefill_s"] = measure.measure_prefill(model, prompt, reps=2)
        s = measure.measure_step(model, B, L, args.prompt, reps=args.reps, compile=not args.eager)
        row.update(forward_s=s["forward_s"], sampling_s=s["sampling_s"])
        floor = hardware.step_floor(cfg, B, L, args.prompt, bpp, bw, mm["flops_per_s"], kv_bytes_per_elem=kv_bpp)
        row["floor_s"], row["floor"] = floor.seconds, floor.as_dict()
        d = measure.measure_dgemma(model, prompt, new_tokens=L, steps=args.steps, seed=0, reps=1, compile=not args.eager)
        row.update(step_s=d["step_s"], generate_s=d["total_s"], bookkeeping_s=d["bookkeeping_s"],
                   diffusion_tokens_per_s=d["tokens_per_s"], ttft_s=d["ttft_s"],
                   peak_memory_bytes=d["peak_memory_bytes"])
        row["_sequences"] = d["sequences"]
        log(f"  step {row['step_s'] * 1e3:.1f} ms (forward {row['forward_s'] * 1e3:.1f} ms), floor "
            f"{floor.seconds * 1e3:.1f} ms ({floor.bound}-bound), prefill {row['prefill_s'] * 1e3:.0f} ms")

    def ar_part(row, prompt):
        log(f"batch {row['batch']}: AR decoding")
        a = measure.measure_ar(model, prompt, new_tokens=args.ar_tokens, reps=1)
        af = hardware.step_floor(cfg, row["batch"], 1, args.prompt, bpp, bw, mm["flops_per_s"], decoder=False,
                                 kv_bytes_per_elem=kv_bpp)
        row.update(ar_token_s=a["token_latency_s"], ar_tokens_per_s=a["decode_tokens_per_s"], ar_floor_s=af.seconds)
        log(f"  AR token {a['token_latency_s'] * 1e3:.1f} ms, floor {af.seconds * 1e3:.1f} ms")

    def reference_part(row, prompt):
        log(f"batch {row['batch']}: reference static-cache compiled generate")
        r = reference_step(ref, prompt, args.steps, reps=1, log=log)
        row["reference_step_s"], row["reference_total_s"] = r["reference_step_s"], r["reference_total_s"]
        row["token_agreement"] = measure.compare_sequences(row["_sequences"], r["reference_sequences"])["agreement"]
        log(f"  reference step {r['reference_step_s'] * 1e3:.1f} ms")

    def free():
        if device.type == "cuda":
            torch.cuda.empty_cache()

    prompts = {}
    # dgemma and AR first for every batch size, then the reference (its compilation is the slow, optional part)
    for B in [int(x) for x in args.batches.split(",")]:
        if late():
            errors.append(f"batch {B}: skipped, past the deadline")
            continue
        row = {"batch": B, "prompt": args.prompt, "canvas": L, "steps": args.steps}
        rows.append(row)
        prompt = prompts[B] = measure.make_prompt(B, args.prompt, cfg.vocab_size, 0, device)
        if attempt(f"batch {B} dgemma", lambda: dgemma_part(row, prompt)):
            attempt(f"batch {B} AR", lambda: ar_part(row, prompt))
        free()
    for row in rows:
        B = row["batch"]
        if ref is None or "step_s" not in row:
            continue
        if time.perf_counter() - t_start > args.deadline - args.reference_reserve:
            errors.append(f"batch {B} reference: skipped, less than {args.reference_reserve:.0f} s left")
            continue
        attempt(f"batch {B} reference", lambda: reference_part(row, prompts[B]))
        free()
    for row in rows:
        row.pop("_sequences", None)

    result = {
        "kind": "cuda-26b", "name": ("cuda-26b" if args.model == "diffusiongemma-26b-a4b" else f"cuda-{args.model}")
        + (f"-{args.quantize}" if args.quantize else ""), "quantize": args.quantize, "weights": weights,
        "command": "python bench/cuda_26b.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": hardware.machine_description(device),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "note": (f"{args.model} shape, random {args.dtype} weights; prompt {args.prompt}, canvas {L}; dgemma's decoder "
                 f"{'eager' if args.eager else 'compiled (torch.compile, CUDA graphs on GPU)'}; per-step times "
                 f"are medians over a {args.steps}-step canvas; diffusion tok/s = canvas / ({args.steps} steps + "
                 f"commit), AR tok/s = batch / token latency (decode only)"),
        "rates": {"bandwidth_bytes_per_s": bw, "matmul_flops_per_s": mm["flops_per_s"]},
        "rows": rows, "errors": errors, "wall_s": time.perf_counter() - t_start,
    }
    print(json.dumps(result, indent=1, default=float))
    if not args.no_save:
        path = report.save_result(result, Path(args.results_dir))
        md = report.write_markdown(Path(args.results_dir), ROOT / "BENCHMARKS.md", ROOT / "bench/plots", root=ROOT)
        log(f"saved {path}, regenerated {md}")
    return 0 if not errors else 1


if __name__ == "__main__":
    sys.exit(main())
