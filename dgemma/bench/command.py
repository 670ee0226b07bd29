"""`dgemma bench`: the command, its run (everything measured in one process, on the same weights) and the
scaling sweeps."""

from __future__ import annotations

import datetime
import json
import shlex
import sys
import time
from pathlib import Path

import torch

from .hardware import machine_description, measure_bandwidth, measure_matmul, peak_rss_bytes, step_floor, timed
from .measure import (STOP_IDS, reference_generate, build_models, compare_sequences, make_prompt, measure_ar,
                      measure_dgemma, measure_prefill, measure_reference, measure_step, paired_times,
                      reference_available)
from ..quantize import add_quantize_args
from .report import MARKDOWN, PLOTS_DIR, RESULTS_DIR, format_table, save_result, write_markdown


def _dtype(name: str) -> torch.dtype:
    from ..checkpoint import parse_dtype
    return parse_dtype(name)


def _strip(d: dict) -> dict:
    return {k: v for k, v in d.items() if not isinstance(v, torch.Tensor)}


def run_bench(args) -> dict:
    from ..model import DiffusionGemma  # noqa: F401  (fail early if the package is broken)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = _dtype(args.dtype)
    t_start = time.perf_counter()
    if args.quantize and args.reference == "on":
        raise ValueError("--quantize runs without the reference (it has no quantized weights to share): drop "
                         "--reference on")
    want_ref = args.reference != "off" and reference_available() and not args.quantize
    if args.reference == "on" and not want_ref:
        raise ModuleNotFoundError("--reference on, but transformers (with DiffusionGemma) is not installed")
    log = (lambda *a: print(*a, file=sys.stderr, flush=True)) if not args.quiet else (lambda *a: None)

    result = {
        "name": args.name or f"{args.model}-{device.type}-{args.dtype}" + (f"-{args.quantize}" if args.quantize
                                                                            else ""),
        "command": command_line(args),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine_description(device), "device": device.type, "model": args.model, "dtype": args.dtype,
        "compile": args.compile, "quantize": args.quantize,
        "batch": args.batch, "prompt_length": args.prompt_length, "new_tokens": args.new_tokens,
        "steps": args.steps, "seed": args.seed, "reps": args.reps,
        "note": "random weights never stop early: every canvas runs the fixed number of steps given",
    }
    log(f"bench: {result['name']} on {result['machine']}")
    log("bench: measuring memory bandwidth and matmul rate ...")
    bw = measure_bandwidth(device)
    mm = measure_matmul(device, dtype, max_seconds=args.calibrate_seconds)
    result["machine_rates"] = {"bandwidth_bytes_per_s": bw, "matmul": mm}
    if device.type == "cpu" and dtype != torch.bfloat16:
        # whether --dtype bf16 would pay off here: without AVX512-BF16/AMX, bf16 matmuls are emulated
        result["machine_rates"]["matmul_bf16"] = measure_matmul(device, torch.bfloat16, max_seconds=1.0)

    if args.quantize:
        log(f"bench: building {args.model} quantized ({args.quantize}) weight by weight ...")
    ours, ref = build_models(args.model, dtype, device, seed=args.seed, with_reference=want_ref,
                             quantize=args.quantize, group_size=args.group_size)
    config = ours.config
    L = config.canvas_length
    prompt = make_prompt(args.batch, args.prompt_length, config.vocab_size, args.seed, device)
    bpp = torch.finfo(dtype).bits / 8  # activations and KV cache
    if args.quantize:
        from ..quantize import weight_stats
        result["weights"] = {**ours.quantization, **weight_stats(ours)}
        result["peak_rss_bytes_after_build"] = peak_rss_bytes()
    # the weights' bytes per parameter (quantized: their average over the text model)
    wbpp = result["weights"]["weight_bytes"] / config.num_parameters() if args.quantize else bpp

    log("bench: dgemma prefill and generation ...")
    result["prefill_s"] = measure_prefill(ours, prompt, reps=args.reps, compile=args.compile)
    d = measure_dgemma(ours, prompt, new_tokens=args.new_tokens, steps=args.steps, seed=args.seed, reps=args.reps,
                       compile=args.compile)
    result["dgemma"] = _strip(d)

    if want_ref:
        log("bench: reference generate (same weights, seed, settings) ...")
        r = measure_reference(ref, prompt, new_tokens=args.new_tokens, steps=args.steps, seed=args.seed,
                              reps=args.reps)
        r["identity"] = compare_sequences(d["sequences"], r["sequences"])
        # Side by side: the two end-to-end timings alternate run by run, so slow phases of a shared machine hit
        # both alike; the ratio comes from these paired medians.
        log("bench: paired end-to-end runs, dgemma and reference alternating ...")
        ours_t, ref_t, pair_speedups = paired_times(
            lambda: ours.generate(prompt, seed=args.seed, max_new_tokens=args.new_tokens,
                                  max_denoising_steps=args.steps, eos_token_id=STOP_IDS, pad_token_id=0,
                                  compile=args.compile),
            lambda: reference_generate(ref, prompt, args.new_tokens, args.steps, args.seed),
            device, reps=max(3, args.reps))
        result["paired"] = {"dgemma_total_s": ours_t, "reference_total_s": ref_t, "runs": max(3, args.reps),
                            "speedups": pair_speedups}
        d["total_s"] = result["dgemma"]["total_s"] = ours_t
        d["tokens_per_s"] = result["dgemma"]["tokens_per_s"] = d["committed_positions"] / ours_t
        result["dgemma"]["nonpad_tokens_per_s"] = d["generated_tokens"] / ours_t
        r["total_s"], r["tokens_per_s"] = ref_t, r["committed_positions"] / ref_t
        r["speedup"] = d["tokens_per_s"] / r["tokens_per_s"]
        result["reference"] = _strip(r)
        if args.reference_compile:
            log("bench: reference generate with its static cache and torch.compile (compiles first) ...")
            t0 = time.perf_counter()
            rc = measure_reference(ref, prompt, new_tokens=args.new_tokens, steps=args.steps, seed=args.seed,
                                   reps=args.reps, compile_static=True)
            rc["warmup_and_runs_s"] = time.perf_counter() - t0
            rc["identity"] = compare_sequences(d["sequences"], rc["sequences"])
            rc["speedup"] = d["tokens_per_s"] / rc["tokens_per_s"]
            result["reference_compiled"] = _strip(rc)
        if args.exact_check and dtype != torch.float64:
            # Float32/bf16 runs of two implementations round differently (1e-5 in the logits), and sampling from
            # a random model's nearly flat distributions turns that into different tokens. Token identity is
            # therefore checked in float64, on the same weights, prompt, seed and settings.
            log("bench: token-identity check in float64 ...")
            ours64, ref64 = build_models(args.model, torch.float64, "cpu" if device.type == "cpu" else device,
                                         seed=args.seed, with_reference=True)
            p64 = prompt.to(ours64.device)
            n64 = min(args.new_tokens, L * args.exact_canvases)
            with torch.no_grad():
                o = ours64.generate(p64, max_new_tokens=n64, max_denoising_steps=args.steps, seed=args.seed,
                                    eos_token_id=STOP_IDS)
                torch.manual_seed(args.seed)
                rr = ref64.generate(p64, max_new_tokens=n64, max_denoising_steps=args.steps,
                                    eos_token_id=list(STOP_IDS), pad_token_id=0)
            result["reference"]["identity_float64"] = compare_sequences(o.sequences.cpu(), rr.sequences.cpu())
            result["reference"]["identity_float64"]["new_tokens"] = n64
            del ours64, ref64
        del ref

    if args.ar_tokens:
        log("bench: autoregressive decoding of the same weights ...")
        a = measure_ar(ours, prompt, new_tokens=args.ar_tokens, reps=args.reps, compile=args.compile)
        a["diffusion_speedup"] = d["tokens_per_s"] / a["tokens_per_s"]
        result["ar"] = a

    # The floor must be a lower bound: calibrate again after the measurements and keep the best rates seen
    # (on a shared machine a slow phase during one calibration would otherwise inflate the floor).
    log("bench: measuring memory bandwidth and matmul rate again ...")
    bw2 = measure_bandwidth(device)
    mm2 = measure_matmul(device, dtype, max_seconds=args.calibrate_seconds)
    result["machine_rates"]["repeat"] = {"bandwidth_bytes_per_s": bw2, "matmul_flops_per_s": mm2["flops_per_s"]}
    bw = max(bw, bw2)
    if mm2["flops_per_s"] > mm["flops_per_s"]:
        mm["flops_per_s"], mm["best_shape"] = mm2["flops_per_s"], mm2["best_shape"]
    result["machine_rates"]["bandwidth_bytes_per_s"] = bw
    floor = step_floor(config, args.batch, L, args.prompt_length, wbpp, bw, mm["flops_per_s"], kv_bytes_per_elem=bpp)
    dg = result["dgemma"]
    dg["floor"] = floor.as_dict()
    dg["step_over_floor"] = dg["step_s"] / floor.seconds
    dg["forward_over_floor"] = dg["forward_s"] / floor.seconds
    if "ar" in result:
        a = result["ar"]
        af = step_floor(config, args.batch, 1, args.prompt_length, wbpp, bw, mm["flops_per_s"], decoder=False,
                        kv_bytes_per_elem=bpp)
        a["floor"] = af.as_dict()
        a["token_over_floor"] = a["token_latency_s"] / af.seconds

    if args.scaling:
        result["scaling"] = run_scaling(ours, args, bw, mm["flops_per_s"], (wbpp, bpp), log, t_start)
    result["wall_s"] = time.perf_counter() - t_start
    result["peak_rss_bytes"] = peak_rss_bytes()
    return result


def _parse_list(s: str) -> list[int]:
    return [int(x) for x in s.split(",") if x.strip()]


def run_scaling(model, args, bw, rate, bpp: tuple[float, float], log, t_start) -> dict:
    """`bpp`: bytes per weight parameter and per activation/KV element. Per-step latency against batch, canvas length and prompt length; prefill against prompt length; whole
    generation time against the number of steps. Each sweep stops early once the time budget is spent."""
    config, L, out = model.config, model.config.canvas_length, {}
    budget = args.budget

    def over():
        return budget and time.perf_counter() - t_start > budget

    def floor_s(batch, canvas, ctx):
        return step_floor(config, batch, canvas, ctx, bpp[0], bw, rate, kv_bytes_per_elem=bpp[1]).seconds

    sweeps = {
        "batch": [(b, L, args.prompt_length) for b in _parse_list(args.batches)],
        "canvas": [(args.batch, c, args.prompt_length) for c in _parse_list(args.canvases)],
        "prompt": [(args.batch, L, p) for p in _parse_list(args.prompts)],
    }
    for name, points in sweeps.items():
        rows = []
        for batch, canvas, ctx in points:
            if over():
                log(f"bench: time budget spent, {name} sweep stopped before {(batch, canvas, ctx)}")
                break
            log(f"bench: scaling {name}: batch {batch}, canvas {canvas}, prompt {ctx}")
            s = measure_step(model, batch, canvas, ctx, seed=args.seed, reps=2)
            row = {"batch": batch, "canvas": canvas, "prompt": ctx, **s, "floor_s": floor_s(batch, canvas, ctx)}
            if name == "prompt":
                row["prefill_s"] = measure_prefill(model, make_prompt(batch, ctx, config.vocab_size, 0, model.device),
                                                   reps=1)
            row["tokens_per_s_at_fixed_steps"] = batch * canvas / (row["step_s"] * args.steps)
            rows.append(row)
        out[name] = rows
    rows = []
    prompt = make_prompt(args.batch, args.prompt_length, config.vocab_size, args.seed, model.device)
    for n in _parse_list(args.step_counts):
        if over():
            log(f"bench: time budget spent, steps sweep stopped before {n}")
            break
        log(f"bench: scaling steps: {n}")
        t, o = timed(lambda: model.generate(prompt, max_new_tokens=L, max_denoising_steps=n, seed=args.seed,
                                            eos_token_id=STOP_IDS), model.device, reps=1, warmup=0)
        rows.append({"steps": n, "total_s": t, "tokens_per_s": args.batch * L / t,
                     "tokens_per_forward": float(o.tokens_per_forward.float().mean())})
    out["steps"] = rows
    return out


# ---------------------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------------------
def run(args) -> int:
    if args.markdown_only:
        print(write_markdown(Path(args.results_dir), Path(args.markdown or MARKDOWN), Path(args.plots_dir)))
        return 0
    result = run_bench(args)
    print(format_table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1, default=float))
    if args.save or args.markdown:
        print("saved", save_result(result, Path(args.results_dir)), file=sys.stderr)
    if args.markdown:
        print("wrote", write_markdown(Path(args.results_dir), Path(args.markdown), Path(args.plots_dir)),
              file=sys.stderr)
    return 0


def register(sub) -> None:
    p = sub.add_parser("bench", help="benchmark: dgemma vs the reference vs AR vs the hardware floor",
                       description="Measure dgemma's decoding (prefill, per-step forward/sampling/bookkeeping, "
                       "steps per canvas, tokens per forward, tokens/s, time to first canvas, peak memory) side by "
                       "side with transformers' generate on the same weights (token identity checked), AR decoding "
                       "of the same weights, and the roofline floor from bandwidth and matmul rate measured on the "
                       "spot. With --scaling, sweeps batch, canvas, prompt length and steps.")
    p.add_argument("--model", default="small", help="preset name or checkpoint directory (default: small)")
    p.add_argument("--dtype", default="fp32", help="fp32 (default), bf16, fp16, fp64")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--batch", type=int, default=1, help="prompts decoded together (default 1)")
    p.add_argument("--prompt-length", type=int, default=64, help="random prompt tokens per row (default 64)")
    p.add_argument("--new-tokens", type=int, default=256, help="tokens to generate (rounded up to canvases)")
    p.add_argument("--steps", type=int, default=16, help="max denoising steps per canvas (default 16)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights, prompt and sampling (default 0)")
    p.add_argument("--reps", type=int, default=2, help="timed repetitions after one warm-up (median reported)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    p.add_argument("--reference", choices=("auto", "on", "off"), default="auto",
                   help="compare with transformers' generate (auto: when installed)")
    p.add_argument("--reference-compile", action="store_true",
                   help="also run the reference with its static cache and torch.compile (about a minute of "
                   "compilation on a 2-core CPU)")
    p.add_argument("--compile", action="store_true",
                   help="run dgemma compiled (torch.compile of the denoising step and of the encoder's canvas "
                   "commits and AR tokens; CUDA graphs on GPU) in the end-to-end, step and AR measurements; the "
                   "scaling sweeps stay eager")
    p.add_argument("--no-exact-check", dest="exact_check", action="store_false",
                   help="skip the float64 token-identity run")
    p.add_argument("--exact-canvases", type=int, default=1, help="canvases generated by the float64 identity run")
    p.add_argument("--ar-tokens", type=int, default=64, help="tokens of the AR comparison (0: skip)")
    p.add_argument("--scaling", action="store_true", help="also run the scaling sweeps")
    p.add_argument("--batches", default="1,2,4,8,16,32", help="batch sizes of the batch sweep")
    p.add_argument("--canvases", default="32,64,128,256,512", help="canvas lengths of the canvas sweep")
    p.add_argument("--prompts", default="64,256,1024,4096,16384", help="prompt lengths of the prompt sweep")
    p.add_argument("--step-counts", default="4,8,16,32,48", help="denoising step counts of the steps sweep")
    p.add_argument("--budget", type=float, default=0, help="seconds after which sweeps stop early (0: no limit)")
    p.add_argument("--calibrate-seconds", type=float, default=2.0, help="time for the matmul-rate sweep")
    p.add_argument("--name", default=None, help="result name (default: MODEL-DEVICE-DTYPE)")
    p.add_argument("--json", default=None, help="write the full result as JSON here")
    p.add_argument("--save", action="store_true", help="save the result under --results-dir")
    p.add_argument("--markdown", nargs="?", const=str(MARKDOWN), default=None, metavar="PATH",
                   help="save the result and regenerate BENCHMARKS.md (or PATH) and its plots from --results-dir")
    p.add_argument("--markdown-only", action="store_true", help="only regenerate the markdown from saved results")
    p.add_argument("--results-dir", default=str(RESULTS_DIR), help="where result JSON files are saved and read")
    p.add_argument("--plots-dir", default=str(PLOTS_DIR), help="where the PNG plots are written")
    add_quantize_args(p, "benchmark dgemma with quantized weights (the reference and its checks are skipped)")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.set_defaults(func=run)


def command_line(args) -> str:
    """The command that reproduces a run (every option that shapes the numbers, spelled out)."""
    parts = ["dgemma", "bench", "--model", args.model, "--dtype", args.dtype, "--batch", args.batch,
             "--prompt-length", args.prompt_length, "--new-tokens", args.new_tokens, "--steps", args.steps,
             "--seed", args.seed, "--reps", args.reps, "--ar-tokens", args.ar_tokens, "--reference", args.reference]
    if args.device:
        parts += ["--device", args.device]
    if args.name:  # the result's name: without it a rerun would overwrite the default-named row
        parts += ["--name", args.name]
    if args.threads:
        parts += ["--threads", args.threads]
    if args.reference_compile:
        parts.append("--reference-compile")
    if args.compile:
        parts.append("--compile")
    if args.quantize:
        parts += ["--quantize", args.quantize] + (["--group-size", args.group_size] if args.group_size else [])
    if not args.exact_check:
        parts.append("--no-exact-check")
    if args.scaling:
        parts += ["--scaling", "--batches", args.batches, "--canvases", args.canvases, "--prompts", args.prompts,
                  "--step-counts", args.step_counts]
        if args.budget:
            parts += ["--budget", args.budget]
    if args.markdown:
        parts.append("--markdown")
    return " ".join(shlex.quote(str(x)) for x in parts)
