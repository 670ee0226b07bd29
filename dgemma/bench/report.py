"""Printing a result, saving it as JSON, and regenerating BENCHMARKS.md and its plots from every saved result."""

from __future__ import annotations

import datetime
import json
from pathlib import Path


from .hardware import machine_description

RESULTS_DIR = Path("bench/results")
PLOTS_DIR = Path("bench/plots")
MARKDOWN = Path("BENCHMARKS.md")


def _ms(s) -> str:
    return "-" if s is None else f"{s * 1e3:.1f} ms" if s < 10 else f"{s:.1f} s"


def _si(x, unit="") -> str:
    for f, p in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= f:
            return f"{x / f:.2f} {p}{unit}"
    return f"{x:.2f} {unit}"


def summary_rows(r: dict) -> list[tuple[str, str, str]]:
    """(metric, dgemma, comparison) rows of the comparison table."""
    d, rows = r["dgemma"], []
    ref, ar = r.get("reference"), r.get("ar")
    if r.get("weights"):
        w = r["weights"]
        rows.append(("quantized weights", f"{w['scheme']}: {_si(w['weight_bytes'], 'B')}",
                     f"{100 * w['quantized_fraction']:.1f}% of the text weights quantized; process peak after "
                     f"building {_si(r['peak_rss_bytes_after_build'], 'B')}"))
    rows.append(("prefill latency", _ms(r["prefill_s"]), ""))
    rows.append(("denoising step (median)", _ms(d["step_s"]),
                 f"floor {_ms(d['floor']['seconds'])} ({d['floor']['bound']}-bound): {d['step_over_floor']:.2f}x"))
    if d.get("graph_s"):  # the compiled CPU engine runs a step as one graph
        rows.append(("  one compiled graph", _ms(d["graph_s"]), "decoder forward + sampling + acceptance"))
        rows.append(("    decoder forward", _ms(d["forward_s"]), f"timed alone; {d['forward_over_floor']:.2f}x floor"))
        rows.append(("    sampling", _ms(d["sampling_s"]), "timed alone"))
        rows.append(("  outside the graph", _ms(d["bookkeeping_s"]), "random draws, events, stop check"))
    else:
        rows.append(("  decoder forward", _ms(d["forward_s"]), f"{d['forward_over_floor']:.2f}x floor"))
        rows.append(("  sampling", _ms(d["sampling_s"]), ""))
        rows.append(("  bookkeeping", _ms(d["bookkeeping_s"]), ""))
    rows.append(("steps per canvas", ",".join(map(str, d["steps_per_canvas"])), "fixed by --steps (random weights)"))
    rows.append(("tokens per forward", f"{d['tokens_per_forward']:.2f}", ""))
    rows.append(("time to first canvas", _ms(d["ttft_s"]), ""))
    paired = f"; median of {r['paired']['runs']} runs alternating with the reference" if r.get("paired") else ""
    rows.append(("end to end", f"{d['tokens_per_s']:.1f} tok/s",
                 f"{_ms(d['total_s'])} for {d['committed_positions']} tokens{paired}"))
    rows.append(("peak memory (added by the run)", _si(d["peak_extra_bytes"], "B"),
                 f"process peak {_si(d['peak_memory_bytes'], 'B')}"))
    if ref:
        ident = ref["identity"]
        pairs = (r.get("paired") or {}).get("speedups")
        spread = f" ({pairs[0]:.2f}-{pairs[-1]:.2f}x over the {len(pairs)} pairs)" if pairs else ""
        rows.append(("reference generate", f"{ref['tokens_per_s']:.1f} tok/s",
                     f"dgemma {ref['speedup']:.2f}x faster{spread}; tokens "
                     f"{'identical' if ident['identical'] else 'differ'} ({ident['agreement'] * 100:.1f}% equal)"))
        rc = r.get("reference_compiled")
        if rc:
            rows.append(("reference, static cache + compile", f"{rc['tokens_per_s']:.1f} tok/s",
                         f"dgemma {rc['speedup']:.2f}x faster; compile + runs took {rc['warmup_and_runs_s']:.0f} s"))
        if "identity_float64" in ref:
            i64 = ref["identity_float64"]
            rows.append(("token identity in float64", "identical" if i64["identical"] else "DIFFERENT",
                         f"{i64['new_tokens']} tokens per row, same weights/seed/settings; {i64['detail']}"))
    if ar:
        rows.append(("AR decoding (same weights)", f"{ar['tokens_per_s']:.1f} tok/s",
                     f"{_ms(ar['token_latency_s'])}/token, floor {_ms(ar['floor']['seconds'])} "
                     f"({ar['token_over_floor']:.1f}x); diffusion {ar['diffusion_speedup']:.2f}x AR"))
    rates = r["machine_rates"]
    rows.append(("machine: memory bandwidth", _si(rates["bandwidth_bytes_per_s"], "B/s"),
                 "measured: large copy, best of a calibration before and one after the runs"))
    rows.append(("machine: matmul rate", _si(rates["matmul"]["flops_per_s"], "FLOP/s"),
                 f"measured: {rates['matmul']['dtype']} {'x'.join(map(str, rates['matmul']['best_shape']))}, "
                 "best of two calibrations"))
    if "matmul_bf16" in rates:
        b = rates["matmul_bf16"]
        rows.append(("machine: bf16 matmul rate", _si(b["flops_per_s"], "FLOP/s"),
                     f"measured: {'x'.join(map(str, b['best_shape']))}; "
                     + ("slower than float32 here: use --dtype fp32 on this CPU"
                        if b["flops_per_s"] < rates["matmul"]["flops_per_s"] else "faster than float32")))
    return rows


def format_table(r: dict) -> str:
    rows = [("metric", "dgemma", "comparison")] + summary_rows(r)
    w = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [" | ".join(c.ljust(w[i]) for i, c in enumerate(row)) for row in rows]
    lines.insert(1, "-+-".join("-" * x for x in w))
    return "\n".join(lines)


def _md_table(header: list[str], rows: list[list]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def make_plots(r: dict, plots_dir: Path) -> list[Path]:
    """PNG plots of the scaling sweeps of one result (matplotlib; skipped when it is not installed)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    sc = r.get("scaling") or {}
    plots_dir.mkdir(parents=True, exist_ok=True)
    made = []
    specs = [("batch", "batch", "step_s", "batch size", "step latency (ms)"),
             ("canvas", "canvas", "step_s", "canvas length", "step latency (ms)"),
             ("prompt", "prompt", "step_s", "prompt length (tokens)", "step latency (ms)"),
             ("prompt", "prompt", "prefill_s", "prompt length (tokens)", "prefill latency (ms)"),
             ("steps", "steps", "total_s", "denoising steps per canvas", "time per canvas (ms)")]
    for sweep, x, y, xl, yl in specs:
        rows = sc.get(sweep) or []
        if not rows or y not in rows[0]:
            continue
        fig, ax = plt.subplots(figsize=(5, 3.4))
        xs = [row[x] for row in rows]
        ax.plot(xs, [row[y] * 1e3 for row in rows], "o-", label="measured")
        if y == "step_s":
            ax.plot(xs, [row["floor_s"] * 1e3 for row in rows], "--", label="roofline floor")
            ax.plot(xs, [row["forward_s"] * 1e3 for row in rows], ".:", label="decoder forward")
        if sweep in ("batch", "prompt", "canvas") and max(xs) / max(1, min(xs)) >= 8:
            ax.set_xscale("log", base=2)
        ax.set_xlabel(xl)
        ax.set_ylabel(yl)
        ax.set_title(f"{r['name']}: {yl.split(' (')[0]} vs {xl.split(' (')[0]}", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = plots_dir / f"{r['name']}-{sweep}-{y.replace('_s', '')}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        made.append(path)
    return made


def verdict(r: dict) -> str:
    """Diffusion against AR on these weights and this machine, in one sentence: a denoising step costs as many AR
    tokens as `break_even`, so diffusion wins where a step commits more tokens than that."""
    step, token = r["dgemma"]["step_s"], r["ar"]["token_latency_s"]
    even = step / token
    side = ("faster than" if even < 15 else "slower than" if even > 20 else "about as fast as")
    return (f"Diffusion against AR here: one denoising step ({_ms(step)}) costs as much as {even:.1f} AR tokens "
            f"({_ms(token)} each, batch {r['batch']}), so block diffusion beats AR decoding of these weights on this "
            f"machine only where a step commits more than {even:.1f} tokens per row; at the 15-20 tokens per pass "
            f"the released model commits, it would be {side} AR.")


def result_markdown(r: dict, plots: list[Path], root: Path) -> str:
    out = [f"## {r['name']}", "",
           f"- command: `{r['command']}`", f"- machine: {r['machine']}", f"- date: {r['date']}",
           f"- model `{r['model']}` ({r['dtype']}), batch {r['batch']}, prompt {r['prompt_length']} tokens, "
           f"{r['new_tokens']} new tokens, {r['steps']} denoising steps per canvas, seed {r['seed']}, "
           f"median of {r['reps']} runs after a warm-up"
           + (", dgemma's decoder compiled (torch.compile, compiled in the warm-up)" if r.get("compile") else ""),
           f"- {r['note']}",
           "- end to end and the reference: medians of runs alternating dgemma / reference; the step breakdown: "
           "instrumented runs (decoder forward and sampling timed call by call, bookkeeping = the rest of the "
           "step), the run with the fastest median step kept", ""]
    out.append(_md_table(["metric", "dgemma", "comparison"], [list(row) for row in summary_rows(r)]))
    f = r["dgemma"]["floor"]
    out += ["", f"Roofline floor of one denoising step: {_si(f['weight_bytes'], 'B')} of weights touched + "
            f"{_si(f['kv_bytes'], 'B')} of cached keys/values over the measured bandwidth = {_ms(f['memory_s'])}; "
            f"{_si(f['flops'], 'FLOP')} over the measured matmul rate = {_ms(f['compute_s'])}; the floor is the "
            f"larger. The FLOPs count every matmul of the step (projections, dense and routed experts, attention, the "
            f"tied head, and the soft-embedding product that feeds self-conditioning); the elementwise work of "
            f"sampling over the full vocabulary (softmax, random draws, entropy) is not in the floor.", ""]
    if r.get("ar"):
        out += [verdict(r), ""]
    sc = r.get("scaling") or {}
    for sweep, cols in (("batch", ["batch"]), ("canvas", ["canvas"]), ("prompt", ["prompt"])):
        rows = sc.get(sweep)
        if not rows:
            continue
        extra = ["prefill"] if sweep == "prompt" else []
        header = cols + ["forward", "sampling", "step", "floor", "step/floor", f"tok/s at {r['steps']} steps"] + extra
        body = [[row[c] for c in cols] + [_ms(row["forward_s"]), _ms(row["sampling_s"]), _ms(row["step_s"]),
                                          _ms(row["floor_s"]), f"{row['step_s'] / row['floor_s']:.2f}x",
                                          f"{row['tokens_per_s_at_fixed_steps']:.1f}"]
                + ([_ms(row["prefill_s"])] if extra else []) for row in rows]
        out += [f"### Scaling: {sweep} (one denoising step with self-conditioning; batch {r['batch']}, "
                f"prompt {r['prompt_length']}, canvas {r.get('canvas_length', '')} unless swept)".replace(
                    ", canvas  unless", " unless"), "", _md_table(header, body), ""]
    if sc.get("steps"):
        out += ["### Scaling: denoising steps (one canvas, whole generation incl. prefill)", "",
                _md_table(["steps", "time", "tok/s", "tokens per forward"],
                          [[row["steps"], _ms(row["total_s"]), f"{row['tokens_per_s']:.1f}",
                            f"{row['tokens_per_forward']:.2f}"] for row in sc["steps"]]), ""]
    for p in plots:
        out.append(f"![{p.stem}]({p.relative_to(root) if p.is_absolute() else p})")
    out.append("")
    return "\n".join(out)


NO_GPU_SECTION = """## CUDA: 26B-A4B shape, random bf16 weights

**Not yet run: no GPU available in this session.** `python bench/cuda_26b.py` measures it (batch 1 and 4,
4k-token prompt, 256-token canvas: per-step latency against its floor, against the reference's static-cache
compiled `generate`, and AR token latency) and writes `bench/results/cuda-26b.json`; `dgemma bench --markdown`
then puts its numbers here. No numbers are shown until that has run.
"""


def cuda_markdown(r: dict) -> str:
    out = [f"## {r['name']}", "", f"- command: `{r['command']}`", f"- machine: {r['machine']}",
           f"- date: {r['date']}", f"- {r['note']}", ""]
    header = ["batch", "prompt", "step", "forward", "floor", "step/floor", "reference step", "dgemma vs ref",
              "AR token", "AR floor", "diffusion tok/s", "AR tok/s"]
    body = []
    for row in r["rows"]:
        body.append([row["batch"], row["prompt"], _ms(row["step_s"]), _ms(row.get("forward_s")), _ms(row["floor_s"]),
                     f"{row['step_s'] / row['floor_s']:.2f}x",
                     _ms(row.get("reference_step_s")) if row.get("reference_step_s") else "-",
                     f"{row['reference_step_s'] / row['step_s']:.2f}x" if row.get("reference_step_s") else "-",
                     _ms(row.get("ar_token_s")), _ms(row.get("ar_floor_s")),
                     f"{row.get('diffusion_tokens_per_s', 0):.0f}", f"{row.get('ar_tokens_per_s', 0):.0f}"])
    out += [_md_table(header, body), ""]
    for k in ("rates", "errors"):
        if r.get(k):
            out.append(f"- {k}: `{json.dumps(r[k])}`")
    out.append("")
    return "\n".join(out)


def write_markdown(results_dir: Path = RESULTS_DIR, markdown: Path = MARKDOWN, plots_dir: Path = PLOTS_DIR,
                   root: Path | None = None) -> Path:
    """Regenerate BENCHMARKS.md (and its plots) from every JSON result in `results_dir`."""
    root = root or markdown.parent
    results = []
    for path in sorted(Path(results_dir).glob("*.json")):
        try:
            results.append(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError):
            continue
    parts = ["# Benchmarks", "",
             "Generated by `dgemma bench --markdown` from the JSON files in `bench/results/` (never edited by hand).",
             "Each section names the command that produced it, the machine and the date. In the decoding benchmarks",
             "the model weights are random (a random model never stops denoising early), so every canvas runs the",
             "fixed number of steps stated; the task and server tables use the bundled trained models.",
             "Memory bandwidth and matmul rate are measured in the same run, not taken from datasheets.",
             "",
             "Token identity with the reference is checked in float64 on the same weights, prompt, seed and",
             "settings (`token identity in float64`). In float32 the two implementations round differently (about",
             "1e-5 in the logits) and a random model's nearly flat distributions turn that into different samples,",
             "so the float32 rows report the fraction of equal tokens instead; the reference-exact tests",
             "(`tests/test_engine.py`) cover float32 on shapes where the roundings coincide.", ""]
    cuda = [r for r in results if r.get("kind") == "cuda-26b"]
    runs = sorted((r for r in results if not r.get("kind")), key=lambda r: (r["model"], r["batch"], r["name"]))
    if runs:
        parts += ["## Summary", "", _md_table(
            ["run", "batch", "dgemma tok/s", "reference tok/s", "dgemma / reference", "/ compiled reference",
             "step / floor", "forward / floor", "diffusion / AR", "token identity (float64)"],
            [[f"[{r['name']}](#{r['name']})", r["batch"], f"{r['dgemma']['tokens_per_s']:.1f}",
              f"{r['reference']['tokens_per_s']:.1f}" if r.get("reference") else "-",
              f"{r['reference']['speedup']:.2f}x" if r.get("reference") else "-",
              f"{r['reference_compiled']['speedup']:.2f}x" if r.get("reference_compiled") else "-",
              f"{r['dgemma']['step_over_floor']:.2f}x", f"{r['dgemma']['forward_over_floor']:.2f}x",
              f"{r['ar']['diffusion_speedup']:.2f}x" if r.get("ar") else "-",
              ("identical" if r["reference"]["identity_float64"]["identical"] else "DIFFERENT")
              if r.get("reference", {}).get("identity_float64") else "-"] for r in runs]), ""]
        parts += ["Goals of issue #8 on CPU: at least 4x the reference's tokens/s at identical output, and a "
                  "denoising step within 2x of its floor. Measured: " + "; ".join(
                      f"{r['name']}: " + (f"{r['reference']['speedup']:.2f}x the reference "
                                          f"({'met' if r['reference']['speedup'] >= 4 else 'not met'}), "
                                          if r.get("reference") else "")
                      + f"step {r['dgemma']['step_over_floor']:.2f}x its floor "
                      f"({'met' if r['dgemma']['step_over_floor'] <= 2 else 'not met'})" for r in runs) + ".", ""]
    for r in runs:
        parts.append(result_markdown(r, make_plots(r, plots_dir), root))
    for r in results:
        if r.get("kind") in ("before-after", "table"):
            parts.append(before_after_markdown(r))
    parts.append(cuda_markdown(cuda[0]) if cuda else NO_GPU_SECTION)
    markdown.write_text("\n".join(parts))
    return markdown


def before_after_markdown(r: dict) -> str:
    out = [f"## {r['title']}", "", f"- command: `{r['command']}`", f"- machine: {r['machine']}",
           f"- date: {r['date']}", ""]
    if r.get("text"):
        out += [r["text"], ""]
    out += [_md_table(r["header"], r["rows"]), ""]
    return "\n".join(out)


def save_table(name: str, title: str, command: str, header: list[str], rows: list[list], text: str = "",
               device="cpu", results_dir: Path = RESULTS_DIR) -> Path:
    """Save a table (task evaluations, server load tests) for BENCHMARKS.md with its command, machine and date;
    `dgemma bench --markdown-only` then renders it."""
    return save_result({"kind": "table", "name": name, "title": title, "command": command,
                        "machine": machine_description(device),
                        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                        "text": text, "header": header, "rows": rows}, results_dir)


def publish_table(save: bool, name: str, title: str, command: str, header: list[str], rows: list[list],
                  text: str = "") -> None:
    """A benchmark script's ending: print the table's rows and text, and save it (`save_table`) unless told not to."""
    for r in rows:
        print(" | ".join(map(str, r)))
    print(text)
    if save:
        print(f"saved {save_table(name, title, command, header, rows, text)}")


def save_result(r: dict, results_dir: Path = RESULTS_DIR) -> Path:
    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{r['name']}.json"
    path.write_text(json.dumps(r, indent=1, default=float))
    return path
